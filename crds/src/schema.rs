//! Hand-written schema fragments where the derived ones cannot say what we mean.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A setup package that may be explicitly `null` ("this role has no setup package").
pub fn nullable_setup_package(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "description": "Setup package; null means explicitly none.",
        "properties": {
            "packageURL": {"type": "string", "pattern": r"^(file|https?)://.+\.tgz$"},
            "useNewSetupLayout": {"type": "boolean"}
        },
        "required": ["packageURL"]
    })
}
