//! Adversarial: sessions (filled in by the hardening work).
