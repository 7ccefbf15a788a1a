//! The HTTP edge that faces the internet: the GitHub webhook listener ([`webhook`], which never
//! sees the engine) and the daemon's [`JobSink`](webhook::JobSink) over the engine ([`jobs`]).
//! `daemon::serve_with` mounts them next to the API.

pub mod jobs;
pub mod webhook;
