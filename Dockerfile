# portcullis container image.
#
#   docker build -t portcullis .
#   docker run -p 8080:8080 -p 9100:9100 \
#     -v $PWD/my.yaml:/etc/portcullis/portcullis.yaml:ro portcullis
#
# The config is read from /etc/portcullis/portcullis.yaml (mount yours there). The process
# runs as the non-root user `portcullis` (uid 10001). SIGTERM drains in-flight requests for
# `server.grace_period_seconds` (20 s in the bundled config, inside Kubernetes' 30 s).

# Build: exactly the steps of `make build` (scripts/deps.sh installs cmake, pkg-config, xz and
# the OpenSSL headers with apt-get, then scripts/build-release.sh: a locked release build
# optimised with the committed profile link/portcullis.profdata.xz, made for this Rust version).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN make build

# Runtime: slim Debian with the OpenSSL runtime and CA certificates.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin portcullis \
    && mkdir -p /etc/portcullis /run/portcullis \
    && chown portcullis /run/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY conf/docker.yaml /etc/portcullis/portcullis.yaml
USER portcullis
# HTTP, HTTPS, metrics, admin (the admin API listens on 127.0.0.1 inside the container by default).
EXPOSE 8080 8443 9100 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["-c", "/etc/portcullis/portcullis.yaml"]
