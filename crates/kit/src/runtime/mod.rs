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
//! Guarantees beyond the life cycle (the full rules are in the docs of
//! `runtime/slots.rs` and `runtime/http.rs`):
//!
//! - **Data belongs to a placement slot**, not to an instance id: an instance's
//!   [`InstanceContext::data_dir`] is `<data>/<service>/<region>/<zone>/<ordinal>`
//!   ([`Slot`]), the lowest ordinal of its service in its zone that no instance holds,
//!   so an instance started in place of an ended one takes over its data. At most one
//!   live instance holds a slot, across processes too (an exclusive lock on
//!   `.slot.lock` in the slot). Directories of the layout before slots are adopted
//!   (renamed, logged); other strays are reported at WARN and by
//!   [`Platform::orphaned_data`], never deleted.
//! - **A panic is contained to its connection**: [`serve_tcp`] and [`serve_http`]
//!   catch it, close that connection, log it at ERROR with the instance and peer,
//!   count it (`connection_panics_total`) and keep accepting.
//! - **Connections are bounded per listener** ([`ListenerLimits`], default 4,096,
//!   per service via [`Platform::set_listener_limits`]): past the limit a connection
//!   is accepted and closed (HTTP: a best-effort `503`, `Connection: close`) and
//!   counted (`connections_refused_total`); an idle HTTP connection is closed after
//!   [`ListenerLimits::header_read_timeout`] (default 30 s).
//!
//! - **Region evacuation is one flag per region** ([`Evacuations`],
//!   [`Platform::set_region_evacuated`], [`InstanceContext::region_evacuated`]):
//!   set and cleared where discovery keeps the region override, so the services
//!   facing outside clients (the chat node, the uber API) refuse and move them
//!   while their region is out. Embedded mode only; in fleet mode an instance
//!   would learn it from its lease renewal (not built).
//!
//! Services plug in through [`ServiceFactory`]; discovery plugs in through
//! [`Registrar`]. The runtime knows neither discovery's protocol nor any case.
//!
//! Deliberately absent: restarts on failure (a failed instance stays `failed`; the
//! autoscaler and deployer decide what replaces it) and OS-process isolation (that is
//! fleet mode: `casebook serve`).

pub mod bad_build;
pub mod evacuation;
mod http;
mod platform;
mod slots;

pub use bad_build::BadBuild;
pub use evacuation::Evacuations;
pub use http::{
    AcceptOptions, ListenerLimits, MAX_CONNECTIONS_CEILING, serve_http, serve_http_with, serve_tcp,
    serve_tcp_with,
};
pub use platform::{
    BindError, BoxFuture, InstanceContext, InstanceSpec, InstanceState, InstanceView, Lease,
    NamedListener, Platform, Registrar, ServiceFactory, StartError, StopReport, WeakPlatform,
};
pub use slots::Slot;
