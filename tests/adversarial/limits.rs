//! Adversarial: limits (filled in by the hardening work).
