//! The columns of a Parquet trace file and its schema version. The version
//! is stored under [`SCHEMA_VERSION_KEY`] in the file's key-value metadata;
//! readers refuse a file whose version they do not know. The rule
//! (docs/FLEET.md): adding a nullable column keeps the version; renaming,
//! removing or retyping a column, or changing what one means, bumps it.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The schema version this tracer writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The key-value metadata key holding [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "cuda_tracer.schema_version";
/// The key-value metadata key holding the session's start (Unix ns).
pub const START_UNIX_NS_KEY: &str = "cuda_tracer.start_unix_ns";

/// Column names, in file order.
pub mod col {
    pub const TIME: &str = "time";
    pub const TS_NS: &str = "ts_ns";
    pub const DUR_NS: &str = "dur_ns";
    pub const PID: &str = "pid";
    pub const TID: &str = "tid";
    pub const LAYER: &str = "layer";
    pub const FUNCTION: &str = "function";
    /// What the function does, from the FUNCS table: its role (lowercase:
    /// `alloc`, `free`, `launch`, `copy`, …) and group (`launch`,
    /// `memory`, …); null for a function the table lacks.
    pub const ROLE: &str = "role";
    pub const GROUP: &str = "group";
    pub const RET: &str = "ret";
    pub const ERROR: &str = "error";
    pub const CALLER: &str = "caller";
    pub const KERNEL: &str = "kernel";
    pub const BYTES: &str = "bytes";
    pub const DIRECTION: &str = "direction";
    pub const GRID_X: &str = "grid_x";
    pub const GRID_Y: &str = "grid_y";
    pub const GRID_Z: &str = "grid_z";
    pub const BLOCK_X: &str = "block_x";
    pub const BLOCK_Y: &str = "block_y";
    pub const BLOCK_Z: &str = "block_z";
    pub const SHARED_MEM: &str = "shared_mem";
    pub const STREAM: &str = "stream";
    pub const GRAPH_EXEC: &str = "graph_exec";
    pub const DPTR: &str = "dptr";
    pub const ARGS: &str = "args";
    pub const EXTRA: &str = "extra";
    pub const NODE: &str = "node";
    pub const POD: &str = "pod";
    pub const NAMESPACE: &str = "namespace";
    pub const SESSION: &str = "session";
}

/// Where the calls of a file were traced: the same for every row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileContext {
    pub node: String,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub session: String,
    /// Wall-clock nanoseconds at `ts_ns` = 0.
    pub start_unix_ns: i64,
}

/// The Arrow schema of [`SCHEMA_VERSION`].
pub fn arrow_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(build);
    Arc::clone(&SCHEMA)
}

fn build() -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let i32s = [col::PID, col::TID, col::RET, col::GRID_X, col::GRID_Y, col::GRID_Z];
    let dims = [col::BLOCK_X, col::BLOCK_Y, col::BLOCK_Z];
    let mut fields = vec![
        Field::new(col::TIME, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        Field::new(col::TS_NS, DataType::Int64, false),
        Field::new(col::DUR_NS, DataType::Int64, false),
    ];
    fields.extend(i32s[..3].iter().map(|n| Field::new(*n, DataType::Int32, false)));
    fields.extend([col::LAYER, col::FUNCTION].map(|n| Field::new(n, dict(), false)));
    fields.extend([col::ROLE, col::GROUP].map(|n| Field::new(n, dict(), true)));
    fields.extend([col::ERROR, col::CALLER, col::KERNEL].map(|n| Field::new(n, dict(), true)));
    fields.push(Field::new(col::BYTES, DataType::Int64, true));
    fields.push(Field::new(col::DIRECTION, dict(), true));
    fields.extend(i32s[3..].iter().chain(&dims).map(|n| Field::new(*n, DataType::Int32, true)));
    fields.extend(
        [col::SHARED_MEM, col::STREAM, col::GRAPH_EXEC, col::DPTR].map(|n| Field::new(n, DataType::Int64, true)),
    );
    fields.extend([col::ARGS, col::EXTRA].map(|n| Field::new(n, DataType::Utf8, true)));
    fields.push(Field::new(col::NODE, dict(), false));
    fields.extend([col::POD, col::NAMESPACE].map(|n| Field::new(n, dict(), true)));
    fields.push(Field::new(col::SESSION, dict(), false));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_once_in_order() {
        let schema = arrow_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names.len(), 31);
        assert_eq!(&names[..4], [col::TIME, col::TS_NS, col::DUR_NS, col::PID]);
        assert_eq!(names.last(), Some(&col::SESSION));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}
