//! Adversarial: cookies (filled in by the hardening work).
