//! A custom portcullis binary with one extra plugin: the built-in filters plus `api_key`.
//!
//! `cargo run --example custom_gateway -- -c my.yaml`, then in the config:
//!
//! ```yaml
//! routes:
//!   - name: api
//!     upstream: api
//!     filters:
//!       - kind: api_key
//!         keys: [secret-1]
//! ```

fn main() {
    let mut filters = portcullis::filters::builtin();
    filters.register("api_key", portcullis_api_key::factory);
    std::process::exit(portcullis::run(filters));
}
