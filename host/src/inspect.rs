//! What a component needs, read from its bytes before anything is compiled: the interfaces
//! it imports and how many core instances one instance of it creates. Compiling an
//! interpreted guest (Python, JavaScript on StarlingMonkey) took 6-14 s here, so a component
//! the sandbox cannot run is refused first (in milliseconds), saying what to change.

use crate::error::LoadError;
use wasmparser::{Encoding, Instance, Parser, Payload};

/// The `rulebox:rule` interfaces the host provides.
pub(crate) const HOST_IMPORTS: [&str; 3] = [
    "rulebox:rule/host@0.1.0",
    "rulebox:rule/types@0.1.0",
    "rulebox:rule/grants@0.1.0",
];

/// The WASI 0.2 packages the sandbox links (wasmtime-wasi's synchronous set). Files are
/// the rule's read-only grants, sockets are denied, clocks and randomness are real.
const WASI_PACKAGES: [&str; 6] = ["io", "clocks", "random", "cli", "filesystem", "sockets"];

/// What [`shape`] read.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The top-level component's imports, by name (`wasi:io/poll@0.2.3`).
    pub imports: Vec<String>,
    /// Core module instantiations in the component, nested components included: what one
    /// instance takes from the engine's pool.
    pub core_instances: u32,
}

/// Reads a component's imports and core instance count, without compiling it.
pub(crate) fn shape(bytes: &[u8]) -> Result<Shape, LoadError> {
    let mut shape = Shape {
        imports: Vec::new(),
        core_instances: 0,
    };
    // What is being parsed: the top-level component, then whatever it nests.
    let mut nesting: Vec<Encoding> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload =
            payload.map_err(|e| LoadError::Compile(format!("malformed component: {e}")))?;
        match payload {
            Payload::Version { encoding, .. } => nesting.push(encoding),
            Payload::End(_) => {
                nesting.pop();
            }
            Payload::ComponentImportSection(reader) if nesting.len() == 1 => {
                for import in reader {
                    let import =
                        import.map_err(|e| LoadError::Compile(format!("malformed import: {e}")))?;
                    // Type imports (`request`, `decision`: the world's `use`) are not
                    // something the sandbox provides; instances and functions are.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        shape.imports.push(import.name.name.to_owned());
                    }
                }
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    let instance = instance
                        .map_err(|e| LoadError::Compile(format!("malformed instance: {e}")))?;
                    if matches!(instance, Instance::Instantiate { .. }) {
                        shape.core_instances += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(shape)
}

/// Refuses an import the sandbox does not provide, with what to change.
pub(crate) fn check_import(name: &str) -> Result<(), LoadError> {
    if HOST_IMPORTS.contains(&name) {
        return Ok(());
    }
    let refuse = |fix: String| {
        Err(LoadError::UnexpectedImport {
            import: name.to_owned(),
            fix,
        })
    };
    let provided = format!(
        "it provides rulebox:rule/host@0.1.0, rulebox:rule/grants@0.1.0 and WASI 0.2: wasi:{}",
        WASI_PACKAGES.join(", wasi:")
    );
    let Some(wasi) = name.strip_prefix("wasi:") else {
        return refuse(format!("{provided}; drop the import from the rule's world"));
    };
    let package = wasi.split('/').next().unwrap_or(wasi);
    let version = name.rsplit_once('@').map(|(_, v)| v);
    if WASI_PACKAGES.contains(&package) {
        return match version {
            Some(v) if v.starts_with("0.2.") => Ok(()),
            _ => refuse(format!(
                "{provided}; build the rule for WASI 0.2 (wasm32-wasip2)"
            )),
        };
    }
    refuse(match package {
        "http" => format!(
            "{provided}. Rules cannot make HTTP requests; a JavaScript rule built with jco's \
             defaults imports it: build with `jco componentize ... --disable http --disable \
             fetch-event` (and `--disable clocks`, so its results stay cacheable)"
        ),
        _ => format!(
            "{provided}; drop it from the rule's world (a rule gets its data from facts, settings and grants)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_judged_by_package_and_version() {
        for ok in [
            "rulebox:rule/host@0.1.0",
            "rulebox:rule/grants@0.1.0",
            "wasi:io/poll@0.2.3",
            "wasi:cli/environment@0.2.0",
            "wasi:filesystem/preopens@0.2.6",
        ] {
            assert!(check_import(ok).is_ok(), "{ok}");
        }
        let err = |name| check_import(name).unwrap_err().to_string();
        let http = err("wasi:http/outgoing-handler@0.2.3");
        assert!(
            http.contains("wasi:http/outgoing-handler@0.2.3") && http.contains("--disable http"),
            "{http}"
        );
        let p3 = err("wasi:io/poll@0.3.0");
        assert!(p3.contains("WASI 0.2"), "{p3}");
        let kv = err("wasi:keyvalue/store@0.2.0-draft");
        assert!(kv.contains("drop it"), "{kv}");
        let foreign = err("acme:db/query@1.0.0");
        assert!(
            foreign.contains("`acme:db/query@1.0.0`") && foreign.contains("drop the import"),
            "{foreign}"
        );
        // Not a host interface of another version either.
        assert!(check_import("rulebox:rule/host@0.2.0").is_err());
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        bytes.extend_from_slice(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(shape(&bytes).is_err());
    }
}
