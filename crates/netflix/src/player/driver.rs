//! (driver: next)
