# The ferry image the Helm chart (deploy/helm/ferry) runs:
#   docker build -t ghcr.io/ferry/ferry:0.1.0 .
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferry && strip target/release/ferry

# distroless/cc: glibc and CA certificates (upstream TLS uses the system roots), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
USER 65532:65532
EXPOSE 5000 2112
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["serve", "--listen", "0.0.0.0:5000", "--data-dir", "/var/lib/ferry"]
