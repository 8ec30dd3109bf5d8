//! Identifier newtypes, so a run id is never passed where a graph id belongs.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A new, unique, time-ordered id (UUID v7).
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }

            /// The id as written on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a stored graph.
    GraphId
);
id_type!(
    /// Identifies a run.
    RunId
);
id_type!(
    /// Identifies a Weft instance (one server process) as the owner of the runs it
    /// executes.
    OwnerId
);
