//! Adversarial: edges (filled in by the hardening work).
