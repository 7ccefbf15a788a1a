//! The actions the `baton` binary registers with the engine, and their names for
//! validating workflow files without opening the store.

/// Actions the engine itself provides.
const BUILT_IN: [&str; 3] = ["noop", "log", "shell"];

/// Every action name a workflow file may use with this binary.
pub fn names() -> Vec<&'static str> {
    BUILT_IN.to_vec()
}

/// Whether `name` is an action this binary provides.
pub fn known(name: &str) -> bool {
    names().contains(&name)
}
