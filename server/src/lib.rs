//! The Dispatch agent server (issue 4: not built yet).
