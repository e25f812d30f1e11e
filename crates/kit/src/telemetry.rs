//! Logs, request ids, /health and /metrics (written next).
