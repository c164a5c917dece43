//! Typed reads of one crate's tables by crates that must not depend on it.
//!
//! Every table has one owning module, which keeps every write to it (the "Table owners" table
//! in `docs/architecture.md`). Where a crate needs a fact from a table it does not own and may
//! not link the owner (consultation reads deployments and AI results, the research tier and
//! inference read consultation's tables, all of them read ingest's slides), the read is
//! declared here, once: the SQL for each fact exists nowhere else, so a changed column breaks
//! one function and its callers at compile time instead of a copy of the query in each reader.
//! The owner keeps every write. Reads that run inside a caller's transaction take its
//! connection (`&mut AnyConnection`).

pub mod ai_feedback;
pub mod ai_results;
pub mod consent;
pub mod curation;
pub mod deployments;
pub mod slides;
