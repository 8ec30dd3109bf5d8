//! Pieces the pages share.

pub mod graph;
pub mod question;
pub mod report;
pub mod spec_editor;
