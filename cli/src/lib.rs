//! `dispatchctl` (issue 6: not built yet).
