//! The admin API, on its own listener (default 127.0.0.1:9901), JSON throughout.
//!
//! | call | what |
//! |---|---|
//! | `GET /` | the status page (HTML; `status.css`, `status.js`), refreshed every 2 s |
//! | `GET /status` | version, uptime, config generation, last reload |
//! | `GET /events` | the last 50 health and circuit transitions, newest first |
//! | `GET /overview` | `status`, `upstreams` and `events` in one answer (what the page draws) |
//! | `GET /upstreams` | every upstream and backend: health, circuit, in-flight, latency, weight, enabled |
//! | `POST /upstreams/{u}/backends` | add a backend: `{"address", "weight", "backup", "metadata"}` |
//! | `DELETE /upstreams/{u}/backends/{addr}` | remove a backend |
//! | `POST /upstreams/{u}/backends/{addr}/drain` | no new requests; in-flight ones finish |
//! | `POST /upstreams/{u}/backends/{addr}/enable` | take requests again |
//! | `POST /upstreams/{u}/registrations` | register an instance: `{"address", "weight", "backup", "metadata", "ttl"}` |
//! | `POST /upstreams/{u}/registrations/{addr}/heartbeat` | renew its lease |
//! | `DELETE /upstreams/{u}/registrations/{addr}` | deregister it (it drains) |
//! | `GET /registrations` | every registration with its lease left |
//! | `POST /reload` | re-read the config file |
//!
//! Mutating calls need `Authorization: Bearer <token>` (`admin.token` or `admin.token_env`);
//! without a configured token they are refused.

pub mod api;
pub mod overlay;
mod page;
pub mod registry;

pub use api::AdminApp;
