//! Adversarial: paths (filled in by the hardening work).
