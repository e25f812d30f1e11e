//! Service instances as task groups: start, graceful stop, kill.
//!
//! An **instance** is one running copy of a service, placed in a zone of the
//! topology. Its tasks — accept loops, connections, background work — all run in
//! the instance's own task group ([`InstanceContext::spawn`]), so the runtime can end
//! them together:
//!
//! - **graceful stop** ([`Platform::stop`]): cancel the discovery registration, stop
//!   accepting, let in-flight requests finish (HTTP connections are told to close
//!   after their current request), wait for every task up to a drain deadline, then
//!   kill whatever is left;
//! - **kill** ([`Platform::kill`]): every task is dropped at its next poll, which closes
//!   its sockets, as SIGKILL would close a process's; the registration is not
//!   cancelled, so its lease expires in discovery as a crashed instance's would.
//!
//! Durable data belongs to a placement slot (service, region, zone, ordinal), not
//! to an instance id: see [`Slot`] and the `slots` module docs.
//!
//! Services plug in through [`ServiceFactory`]; discovery plugs in through
//! [`Registrar`]. The runtime knows neither discovery's protocol nor any case.
//!
//! Deliberately absent: restarts on failure (a failed instance stays `failed`; the
//! autoscaler and deployer decide what replaces it) and OS-process isolation (that is
//! fleet mode: `casebook serve`).

mod http;
mod platform;
mod slots;

pub use http::{
    AcceptOptions, ListenerLimits, MAX_CONNECTIONS_CEILING, serve_http, serve_http_with, serve_tcp,
    serve_tcp_with,
};
pub use platform::{
    BindError, BoxFuture, InstanceContext, InstanceSpec, InstanceState, InstanceView, Lease,
    NamedListener, Platform, Registrar, ServiceFactory, StartError, StopReport, WeakPlatform,
};
pub use slots::Slot;
