//! Pieces the pages share.

pub mod graph;
pub mod report;
