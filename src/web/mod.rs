//! The HTTP edge that faces the internet: the GitHub webhook listener ([`webhook`], which never
//! sees the engine).

pub mod webhook;
