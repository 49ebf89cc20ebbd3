//! Traffic (stub).
