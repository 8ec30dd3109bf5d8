//! The workflow engine: graphs of named nodes over a shared JSON state.
//!
//! - [`graph`] parses a JSON spec into a [`Graph`] that can run, or every problem found.
//! - [`tool`] defines what a node runs, the [`Registry`] of tools, and the [`CpuPool`]
//!   that keeps CPU-heavy tools off the async runtime.
//! - [`executor`] is the step loop, with its step limit and the [`StepSink`] through
//!   which the server persists and streams each step.
//! - [`parallel`] runs graphs whose edges fan out, join or map: many branches at once.
//! - [`script`] is the sandboxed Rhai behind conditional edges and the `script` tool.
//!
//! The engine knows nothing of HTTP or storage: those live in `api` and `store`. The
//! tools and presets Weft ships are users of the engine, in `crate::tools`.

pub mod executor;
pub mod graph;
pub mod parallel;
pub mod policy;
pub mod script;
pub mod tool;

pub use executor::{
    execute, Bounds, Checkpoint, Control, Interruption, NodeFailure, NodeStart, RunEnd, RunError, SinkError, StepSink,
    StepView, Waiting,
};
pub use graph::{Graph, GraphError, NodeId};
pub use tool::{CpuPool, Registry};

/// `parent` extended by one JSON pointer segment, `key` escaped as RFC 6901 says: how every
/// problem in a spec or a config says where it is.
pub(crate) fn pointer(parent: &str, key: &str) -> String {
    format!("{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Running a preset's graph in unit tests, with no store and no server.

    use serde_json::Value;

    use super::{execute, executor::NullSink, Checkpoint, Graph, Registry, RunEnd};

    /// Runs `spec` over `state` (a JSON object) with the tools in `registry`.
    pub async fn run_spec(registry: &Registry, spec: &Value, state: Value) -> RunEnd {
        let graph = Graph::parse(spec, registry).expect("the spec parses");
        let state = state.as_object().expect("the state is an object").clone();
        execute(&graph, Checkpoint::start(&graph, state), 100, &mut NullSink)
            .await
            .expect("no sink error")
    }
}
