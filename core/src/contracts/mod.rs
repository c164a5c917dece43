//! Typed reads of one crate's tables by crates that must not depend on it.
//!
//! Every table has one owning module, which keeps every write to it (the "Table owners" table
//! in `docs/architecture.md`). Where a crate needs a fact from a table it does not own and may
//! not link the owner (the research tier and inference read consultation's tables, both read
//! ingest's slides), the read is declared here: its SQL exists once, so a changed column breaks
//! one function and its callers at compile time instead of a copy of the query in each reader.
//! Reads that run inside a caller's transaction take its connection.

pub mod ai_feedback;
pub mod ai_results;
pub mod consent;
pub mod curation;
pub mod deployments;
pub mod slides;
