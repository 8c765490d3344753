//! Building and running the Pingora server from a loaded [`Gateway`].

use crate::admin::AdminApp;
use crate::cli::Cli;
use crate::config::model::Protocol;
use crate::config::model::ServerSection;
use crate::control::{self, ControlHandle, ControlQueue};
use crate::gateway::Gateway;
use crate::jobs::Background;
use crate::observe::metrics_service::MetricsApp;
use crate::proxy::connections::ConnectionCounter;
use crate::proxy::guard::{ClientGuard, DeadlineSource, Deadlines};
use crate::proxy::Proxy;
use crate::tls::{CertSource, SniCertificates};
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::sync::Arc;

/// Pingora's settings from the `server:` section and the command line.
pub fn server_conf(s: &ServerSection, cli: &Cli) -> ServerConf {
    let threads = s
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    ServerConf {
        daemon: cli.daemon,
        threads: threads.max(1),
        work_stealing: s.work_stealing,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        listener_tasks_per_fd: s.listener_tasks_per_fd.max(1),
        ca_file: s.ca_file.clone(),
        ..ServerConf::default()
    }
}

/// Create the Pingora server with every service of `gateway`, ready to run. `control` is the
/// control plane's handle and queue (its thread starts with the server, after any
/// daemonizing fork).
pub fn build_server(
    gateway: &Arc<Gateway>,
    (control, queue): (ControlHandle, ControlQueue),
    cli: &Cli,
    release_memory: Option<fn()>,
) -> Server {
    let snapshot = gateway.snapshot();
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&snapshot.server, cli));
    server.bootstrap();

    for (index, l) in snapshot.listeners.iter().enumerate() {
        if l.protocol == Protocol::Tcp {
            add_tcp_listener(&mut server, gateway, index, l);
            continue;
        }
        let name = format!("listener {}", l.name);
        let mut proxy = pingora::proxy::http_proxy(
            &server.configuration,
            Proxy::new(Arc::clone(gateway), index),
        );
        let h2c = l.http2 && l.protocol != Protocol::Https;
        let mut opts = HttpServerOptions::default();
        opts.h2c = h2c;
        opts.h2_idle_timeout = Some(l.policy.deadlines.idle);
        proxy.server_options = Some(opts);
        let source = Arc::new(ListenerDeadlines {
            gateway: Arc::clone(gateway),
            index,
        });
        let mut svc = Service::new(name, ClientGuard::new(proxy, source, h2c));
        match l.protocol {
            Protocol::Https => {
                let source: Arc<dyn CertSource> = Arc::clone(gateway) as Arc<dyn CertSource>;
                let mut tls = match TlsSettings::with_callbacks(Box::new(SniCertificates::new(
                    source, &l.name,
                ))) {
                    Ok(t) => t,
                    Err(e) => {
                        log::error!("listener {}: cannot set up TLS: {e}", l.name);
                        continue;
                    }
                };
                if l.http2 {
                    tls.enable_h2();
                }
                svc.add_listener(endpoint(l).tls(tls));
                if let Some(p) = &l.proxy {
                    // The header comes before the TLS handshake. The set of trusted peers is
                    // the one at start (changing it for HTTPS needs a graceful upgrade).
                    svc.endpoints()
                        .set_pre_tls_callback(Arc::new(crate::l4::PreTlsProxyHeader(Arc::clone(
                            p,
                        ))));
                }
            }
            _ => svc.add_listener(endpoint(l)),
        }
        svc.set_connection_filter(Arc::new(ConnectionCounter(
            gateway.metrics().downstream_connections(&l.name),
        )));
        server.add_service(svc);
        log::info!(
            "listening for {} on {} ({}{})",
            if l.protocol == Protocol::Https {
                "HTTPS"
            } else {
                "HTTP"
            },
            l.addr,
            l.name,
            if l.http2 { ", HTTP/2" } else { "" }
        );
    }
    if let Some(addr) = snapshot.metrics_addr {
        let mut svc = Service::new(
            "metrics".to_string(),
            MetricsApp::new(Arc::clone(gateway.metrics())),
        );
        svc.add_tcp(&addr.to_string());
        svc.threads = Some(1);
        server.add_service(svc);
        log::info!("serving Prometheus metrics on http://{addr}/metrics");
    }
    if let Some(admin) = &snapshot.admin {
        let app = AdminApp::new(Arc::clone(gateway), control.clone());
        let mut svc = Service::new("admin".to_string(), app);
        svc.add_tcp(&admin.addr.to_string());
        svc.threads = Some(1);
        server.add_service(svc);
        log::info!(
            "admin API on http://{}/ (mutating calls {})",
            admin.addr,
            if admin.token.is_some() {
                "need the bearer token"
            } else {
                "disabled: no token"
            }
        );
    }
    server.add_service(background_service(
        "background",
        Background::new(gateway, control, queue, server.watch_execution_phase(), cli)
            .release_memory(release_memory),
    ));
    server
}

/// The socket of a client listener, with its connections' buffer sizes.
fn endpoint(l: &crate::runtime::ListenerSpec) -> ListenerConfig {
    let (read, write) = l.buffers;
    ListenerConfig::tcp(l.addr.to_string()).l4_buffer(L4BufferSettings::new(read, write))
}

/// A `protocol: tcp` listener: the L4 proxy app on a plain socket.
fn add_tcp_listener(
    server: &mut Server,
    gateway: &Arc<Gateway>,
    index: usize,
    l: &crate::runtime::ListenerSpec,
) {
    let mut svc = Service::new(
        format!("tcp listener {}", l.name),
        crate::l4::TcpProxy::new(Arc::clone(gateway), index),
    );
    svc.add_listener(endpoint(l));
    svc.set_connection_filter(Arc::new(ConnectionCounter(
        gateway.metrics().downstream_connections(&l.name),
    )));
    server.add_service(svc);
    let snapshot = gateway.snapshot();
    let upstream = l
        .tcp
        .as_ref()
        .map_or("", |t| &*snapshot.upstreams[t.upstream].name);
    log::info!(
        "listening for TCP on {} ({}, to upstream {upstream})",
        l.addr,
        l.name
    );
}

/// A listener's deadlines from the live snapshot (a reload changes them for new connections).
struct ListenerDeadlines {
    gateway: Arc<Gateway>,
    index: usize,
}

impl DeadlineSource for ListenerDeadlines {
    fn deadlines(&self) -> Deadlines {
        self.gateway
            .snapshot()
            .listener_policy(self.index)
            .deadlines
    }

    fn proxy(&self) -> Option<Arc<crate::runtime::tcp::ProxyAccept>> {
        let snapshot = self.gateway.snapshot();
        snapshot.listeners.get(self.index)?.proxy.clone()
    }
}

/// Run the daemon for a parsed command line. Returns the process exit code (it returns at
/// all only for `-t` and for configuration errors; otherwise the server runs until stopped).
pub fn run(cli: Cli, ext: crate::gateway::Extensions) -> i32 {
    let (control, queue) = control::channel();
    let ejector: Arc<dyn portcullis_plugin::Ejector> = Arc::new(control.clone());
    let release_memory = ext.release_memory;
    let gateway = match Gateway::load(&cli.conf, ext, ejector) {
        Ok(gw) => gw,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("error: {e}");
            }
            eprintln!(
                "portcullis: {} problem(s) in {}; nothing was started",
                errors.0.len(),
                cli.conf.display()
            );
            return 1;
        }
    };
    if cli.test {
        println!("portcullis: configuration {} is valid", cli.conf.display());
        return 0;
    }
    let server = build_server(&gateway, (control, queue), &cli, release_memory);
    server.run_forever()
}
