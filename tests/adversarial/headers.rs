//! Adversarial: headers (filled in by the hardening work).
