//! The HTTP edge that faces the internet: the GitHub webhook listener ([`webhook`], which never
//! sees the engine) and the daemon's [`JobSink`](webhook::JobSink) over the engine ([`jobs`]).
//! The admin UI ([`ui`]) is the pages people use, behind a login. `daemon::serve_with` mounts
//! them all next to the API.

pub mod jobs;
pub mod server;
pub mod throttle;
pub mod token;
pub mod ui;
pub mod webhook;
