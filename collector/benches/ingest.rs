//! Placeholder until the ingest benchmark lands.
fn main() {}
