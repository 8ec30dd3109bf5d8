//! Pieces the pages share.

pub mod charts;
pub mod graph;
pub mod question;
pub mod report;
pub mod spec_editor;
