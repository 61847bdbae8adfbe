//! Journal -> SQLite traces database, exactly once. (Issue 5: not built yet.)
