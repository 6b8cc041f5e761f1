//! Node-facing HTTP: iPXE scripts by MAC, installer kernel/initrd (HEAD and Range), the
//! iPXE binaries for HTTP boot, token-gated install files and installer events.
//!
//! Every node-facing answer for a bad token is a plain 404: it does not tell a prober
//! whether a token ever existed.

use super::ApiError;
use crate::identity::{Claimed, Verdict};
use crate::inventory::{Node, NodeState, TokenKind, Transition, now_ms};
use crate::mac::MacAddr;
pub use crate::render::kernel::{installer_nic_of, kernel_args, node_domain};
use crate::render::{self, InstallCtx, NodeCtx, ScriptInputs};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};

fn ipxe(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The media type of an install file: JSON for the plan, plain text for the rest.
fn install_file_type(file: &str) -> &'static str {
    if file.ends_with(".json") {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    }
}

fn install_text(file: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, install_file_type(file)),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /boot.ipxe`: a generic script that chains to the per-MAC script.
pub async fn chain_script(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let body = state
            .templates
            .render(
                "chain.ipxe",
                &minijinja::context! { base_url => &state.config.server.base_url },
            )
            .map_err(ApiError::internal)?;
        Ok(ipxe(body))
    })
    .await
}

/// `GET /boot/{mac}.ipxe`: the per-node script.
pub async fn node_script(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let mac: MacAddr = file
            .strip_suffix(".ipxe")
            .unwrap_or(&file)
            .parse()
            .map_err(|e: crate::mac::MacParseError| ApiError::bad_request(e.to_string()))?;
        let body = node_boot_script(&state, mac, render::Loader::Ipxe, peer.ip())?;
        Ok(ipxe(body))
    })
    .await
}

/// The per-node boot script for `loader` (iPXE over HTTP, or GRUB's configuration over
/// TFTP), asked for from `peer`: the install script with the kernel command line and
/// install token for a provisioning node (a node whose install window has passed is
/// failed instead of looping), local boot or a wait message otherwise. Records the
/// step on the node's timeline.
pub fn node_boot_script(
    state: &AppState,
    mac: MacAddr,
    loader: render::Loader,
    peer: std::net::IpAddr,
) -> Result<String, ApiError> {
    let node = state.inventory.node_by_mac(mac)?;
    let cfg = &state.config;
    let (kernel_url, initrd_url) = match loader {
        render::Loader::Ipxe => (
            format!(
                "{}/installer/{}/linux?mac={mac}",
                cfg.server.base_url, state.installer.name
            ),
            format!(
                "{}/installer/{}/initrd.gz?mac={mac}",
                cfg.server.base_url, state.installer.name
            ),
        ),
        render::Loader::Grub => ("/installer/linux".into(), "/installer/initrd.gz".into()),
    };
    let mut inputs = ScriptInputs {
        base_url: &cfg.server.base_url,
        kernel_url,
        initrd_url,
        kernel_args: String::new(),
        retry_secs: cfg.boot.retry_interval.as_secs().max(1),
        commission: false,
    };
    let mut node_for_script = node.clone();
    if let Some(n) = &node
        && n.state == NodeState::Discovered
        && cfg.dhcp.unknown == crate::config::UnknownPolicy::Commission
    {
        // The commissioning script carries the machine's commissioning token.
        let (evidence, verdict) = state.judge_caller(&claimed(state, n), peer);
        if verdict != Verdict::Node {
            state.note_refusal(n.id, "the commissioning script", &evidence, verdict);
            return Err(ApiError::not_found("not found"));
        }
        let now = now_ms();
        let token = match state
            .inventory
            .current_token(n.id, TokenKind::Commission, now)?
        {
            Some(t) => t,
            None => {
                state
                    .inventory
                    .issue_token(n.id, TokenKind::Commission, cfg.boot.token_ttl, now)?
            }
        };
        inputs.kernel_args = crate::render::kernel::commission_kernel_args(cfg, n.mac, &token);
        inputs.commission = true;
    }
    if let Some(n) = &node
        && n.state == NodeState::Provisioning
    {
        // The install script carries the install token: only for the node itself.
        let (evidence, verdict) = state.judge_caller(&claimed(state, n), peer);
        if verdict != Verdict::Node {
            let what = match loader {
                render::Loader::Ipxe => "the install script (iPXE)",
                render::Loader::Grub => "the install configuration (GRUB)",
            };
            state.note_refusal(n.id, what, &evidence, verdict);
            return Err(ApiError::not_found("not found"));
        }
        match state.inventory.current_install_token(n.id, now_ms())? {
            Some(t) => {
                let nctx = NodeCtx::new(n, &node_domain(cfg, n));
                let profile = n
                    .profile
                    .as_deref()
                    .and_then(|name| state.catalog().get(name));
                let nic = installer_nic_of(n, profile.as_ref().map(|p| &p.profile));
                inputs.kernel_args = kernel_args(cfg, &nctx, nic, &t);
            }
            None => {
                // The install window passed: fail visibly instead of looping silently.
                let reason =
                    "install token expired before the installer started; reprovision the node"
                        .to_string();
                let failed = state.inventory.transition(
                    n.id,
                    &Transition::Fail { reason },
                    cfg.boot.token_ttl,
                    now_ms(),
                )?;
                state.events.notify();
                node_for_script = Some(failed);
            }
        }
    }
    let body = render::boot_script(
        &state.templates,
        loader,
        &mac.to_string(),
        node_for_script.as_ref(),
        &inputs,
    )
    .map_err(ApiError::internal)?;
    if let Some(n) = &node_for_script {
        let what = match n.state {
            NodeState::Provisioning => "install".to_string(),
            NodeState::Discovered if inputs.commission => "commission".to_string(),
            NodeState::Installed | NodeState::Enrolled => "boot from local disk".to_string(),
            s => format!("wait ({s})"),
        };
        let (kind, text) = match loader {
            render::Loader::Ipxe => ("ipxe", "iPXE script"),
            render::Loader::Grub => ("grub", "GRUB configuration (signed chain)"),
        };
        state
            .events
            .emit(n.id, kind, format!("{text} served to {peer}: {what}"));
        info!(mac = %mac, node = n.id, action = %what, loader = kind, "boot script served");
    }
    Ok(body)
}

/// `node` as the owner of a token: its id, boot NIC and installer NIC.
fn claimed(state: &AppState, node: &Node) -> Claimed {
    let profile = node
        .profile
        .as_deref()
        .and_then(|name| state.catalog().get(name));
    let nic = installer_nic_of(node, profile.as_ref().map(|p| &p.profile));
    let mut macs = vec![node.mac];
    if nic != node.mac {
        macs.push(nic);
    }
    Claimed { id: node.id, macs }
}

#[derive(Deserialize)]
pub struct MacQuery {
    mac: Option<String>,
}

pub(super) async fn serve_file(state: &AppState, path: &std::path::Path, req: Request) -> Response {
    super::files::serve(&state.file_chunks, path, req).await
}

pub fn is_first_range(headers: &HeaderMap) -> bool {
    match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(r) => r.trim_start_matches("bytes=").starts_with("0-"),
    }
}

/// The file of the installer image `image` named `file` (`linux`, `initrd.gz`).
fn installer_path(state: &AppState, image: &str, file: &str) -> Result<PathBuf, ApiError> {
    if image != state.installer.name {
        return Err(ApiError::not_found(format!(
            "no installer image `{image}` is served (serving `{}`)",
            state.installer.name
        )));
    }
    match file {
        "linux" => Ok(state.installer.kernel.clone()),
        "initrd.gz" => Ok(state.installer.initrd.clone()),
        _ => Err(ApiError::not_found(format!(
            "installer image has no file `{file}` (linux, initrd.gz)"
        ))),
    }
}

/// Puts an installer file's fetch on the timeline of the node that fetched it (by
/// `?mac=`, else by the caller's address).
async fn note_installer_fetch(
    state: &Arc<AppState>,
    file: &str,
    path: &std::path::Path,
    mac: Option<MacAddr>,
    peer: SocketAddr,
) {
    let node = crate::state::blocking(state, move |state| match mac {
        Some(mac) => state
            .inventory
            .node_by_mac(mac)
            .ok()
            .flatten()
            .map(|n| n.id),
        None => state.node_for_ip(peer.ip()),
    })
    .await;
    if let Some(id) = node {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let kind = if file == "linux" { "kernel" } else { "initrd" };
        state.events.emit(
            id,
            kind,
            format!("HTTP {file} ({size} bytes) to {}", peer.ip()),
        );
    }
}

/// `GET|HEAD /installer/{image}/{linux|initrd.gz}`.
pub async fn installer_file(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((image, file)): Path<(String, String)>,
    Query(q): Query<MacQuery>,
    req: Request,
) -> Response {
    let path = match installer_path(&state, &image, &file) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if req.method() == Method::GET && is_first_range(req.headers()) {
        let mac = q.mac.as_deref().and_then(|m| m.parse::<MacAddr>().ok());
        note_installer_fetch(&state, &file, &path, mac, peer).await;
    }
    serve_file(&state, &path, req).await
}

/// The file a whole-file `GET` of `path` (the request target's path, `query` its
/// query) is answered with on the zero-copy path ([`super::conn`]): an installer file
/// (its fetch put on the timeline as [`installer_file`] does), an iPXE binary or a
/// driver package. `None` for every other path, and for anything the router must
/// decode or refuse (percent-encoding, an unknown file): the router then answers.
pub async fn whole_file(
    state: &Arc<AppState>,
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
) -> Option<PathBuf> {
    if path.contains('%') {
        return None;
    }
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    match parts.as_slice() {
        ["installer", "drivers", file] => {
            let (dir, set) = state.drivers.as_ref()?;
            let d = set.packages.values().find(|d| d.file == *file)?;
            Some(dir.join(&d.file))
        }
        ["installer", image, file] => {
            let found = installer_path(state, image, file).ok()?;
            let mac = match query.and_then(|q| super::head::query_value(q, "mac")) {
                Some(m) => Some(m.parse::<MacAddr>().ok()?),
                None if query.is_some_and(|q| q.contains("mac=")) => return None,
                None => None,
            };
            if !found.is_file() {
                return None;
            }
            note_installer_fetch(state, file, &found, mac, peer).await;
            Some(found)
        }
        ["ipxe", file] => state.tftp_tree.lookup(file).ok(),
        _ => None,
    }
}

/// `GET|HEAD /installer/drivers/{file}`: the installer's disk-controller driver
/// packages (`rackseed image drivers`), for early_command. Public files.
pub async fn driver_file(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
    req: Request,
) -> Response {
    let Some((dir, set)) = &state.drivers else {
        return ApiError::not_found(
            "no installer drivers are stored; run `rackseed image drivers`",
        )
        .into_response();
    };
    match set.packages.values().find(|d| d.file == file) {
        Some(d) => serve_file(&state, &dir.join(&d.file), req).await,
        None => ApiError::not_found(format!("no driver package `{}`", file.escape_debug()))
            .into_response(),
    }
}

/// `GET|HEAD /ipxe/{file}`: the iPXE binaries, for UEFI HTTP boot.
pub async fn ipxe_binary(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
    req: Request,
) -> Response {
    match state.tftp_tree.lookup(&file) {
        Ok(path) if !file.contains('/') => serve_file(&state, &path, req).await,
        _ => ApiError::not_found(format!("no iPXE binary `{file}`")).into_response(),
    }
}

/// The node of a live token of `kind` whose state `state_ok` accepts, when `peer` is
/// that node (see [`crate::identity`]); 404 otherwise, and a refusal on the node's
/// timeline when the token is right but the caller is not the node.
pub(super) fn token_node(
    state: &AppState,
    token: &str,
    kind: TokenKind,
    state_ok: fn(NodeState) -> bool,
    peer: std::net::IpAddr,
    what: &str,
) -> Result<Node, ApiError> {
    let gone = || ApiError::not_found("not found");
    let node = state
        .inventory
        .node_by_token(token, kind, now_ms())?
        .ok_or_else(gone)?;
    if !state_ok(node.state) {
        return Err(gone());
    }
    let (evidence, verdict) = state.judge_caller(&claimed(state, &node), peer);
    if verdict != Verdict::Node {
        state.note_refusal(node.id, what, &evidence, verdict);
        return Err(gone());
    }
    Ok(node)
}

/// The node of a live install token, when it is installing and `peer` is that node.
fn installing_node(
    state: &AppState,
    token: &str,
    peer: std::net::IpAddr,
    what: &str,
) -> Result<Node, ApiError> {
    token_node(
        state,
        token,
        TokenKind::Install,
        NodeState::serves_installer,
        peer,
        what,
    )
}

/// The template context for an installing node.
pub fn install_ctx(state: &AppState, node: &Node, token: &str) -> Result<InstallCtx, ApiError> {
    let cfg = &state.config;
    let profile_name = node.profile.as_deref().unwrap_or_default();
    let profile = state.catalog().get(profile_name).ok_or_else(|| {
        ApiError::internal(format!(
            "node {} has profile `{profile_name}`, which is not loaded",
            node.display_name()
        ))
    })?;
    let mut ctx =
        render::node_ctx(cfg, node, &profile, state.mirror.clone(), token).map_err(|e| {
            let why = crate::error_chain(&e);
            state.events.emit(
                node.id,
                "error",
                format!("install files cannot be rendered: {why}"),
            );
            ApiError::internal(format!(
                "install files of {} cannot be rendered",
                node.display_name()
            ))
        })?;
    ctx.drivers = state.driver_packages();
    Ok(ctx)
}

/// `GET /install/{token}/{file}`: the preseed and scripts, only while installing.
pub async fn install_file(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        if !render::INSTALL_FILES.contains(&file.as_str()) {
            return Err(ApiError::not_found("not found"));
        }
        let node = installing_node(&state, &token, peer.ip(), &file)?;
        let mut ctx = install_ctx(&state, &node, &token)?;
        ctx.agent.sha256 = state.agent.sha256.clone();
        ctx.agent.ca_pem = state.ca.cert_pem.clone();
        if file == "late.sh" {
            // The enrollment token is issued when the late command is fetched (the closest
            // point to its use), to the installing node only, and only one is valid: a
            // second fetch issues a new one and the first stops working. No other file
            // carries it.
            ctx.agent.token = state.inventory.reissue_enroll_token(
                node.id,
                state.config.enroll.token_ttl,
                now_ms(),
            )?;
        }
        let body = render::install_file(&state.templates, &file, &ctx).map_err(|e| {
            let why = crate::error_chain(&e);
            warn!(node = node.id, file = %file, error = %why, "install file failed to render");
            state
                .events
                .emit(node.id, "error", format!("{file} failed to render: {why}"));
            ApiError::internal(format!("{file} failed to render"))
        })?;
        let kind = if file == "preseed.cfg" {
            // The first preseed of this install ends the boot: DHCP → preseed.
            let inv = &state.inventory;
            if let (Ok(Some(dhcp)), Ok(None)) = (
                inv.first_since_state(node.id, "dhcp"),
                inv.first_since_state(node.id, "preseed"),
            ) {
                state.metrics.observe_step(
                    crate::metrics::step::DHCP_TO_PRESEED,
                    (now_ms() - dhcp) as f64 / 1000.0,
                );
            }
            "preseed"
        } else {
            "script"
        };
        state.events.emit(
            node.id,
            kind,
            format!("HTTP {file} ({} bytes) to {}", body.len(), peer.ip()),
        );
        Ok(install_text(&file, body))
    })
    .await
}

/// `GET /install/{token}/agent/rackseed`: this program, which the late command installs
/// as the node's agent after checking its SHA-256 (given in the late script).
pub async fn agent_binary(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    let node = match crate::state::blocking(&state, move |state| {
        installing_node(&state, &token, peer.ip(), "the agent binary")
    })
    .await
    {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    state.events.emit(
        node.id,
        "agent",
        format!(
            "HTTP agent binary ({} bytes, sha256 {}) to {}",
            state.agent.size,
            state.agent.sha256,
            peer.ip()
        ),
    );
    serve_file(&state, &state.agent.path, req).await
}

pub use crate::node::valid_kind;

/// `POST /install/{token}/events/{kind}`: an installer step report. `early_command`
/// and `late_command` move the node (installing, installed); `error` fails it.
pub async fn install_event(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, kind)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::state::blocking(&state, move |state| {
        let text = crate::node::event_text(&kind, &body)?;
        let node = installing_node(&state, &token, peer.ip(), &format!("a `{kind}` event"))?;
        let ttl = state.config.boot.token_ttl;
        let transition = match kind.as_str() {
            "early_command" => Some(Transition::EarlyCommand),
            "late_command" => Some(Transition::LateCommand),
            "error" => Some(Transition::Fail {
                reason: if text.is_empty() {
                    "installer reported an error".into()
                } else {
                    text.clone()
                },
            }),
            _ => None,
        };
        // The event and its state change are stored together; a refused change stores neither.
        let message = if text.is_empty() {
            format!("{kind} from {}", peer.ip())
        } else {
            text.clone()
        };
        if kind == "late_command"
            && node.state == crate::inventory::NodeState::Installing
            && let Ok(Some(since)) = state.inventory.state_since(node.id)
        {
            state.metrics.observe_step(
                crate::metrics::step::INSTALL,
                (now_ms() - since) as f64 / 1000.0,
            );
        }
        match transition {
            Some(t) => {
                let n = state.inventory.transition_with_event(
                    node.id,
                    Some((&kind, &message)),
                    &t,
                    ttl,
                    now_ms(),
                )?;
                info!(node = node.id, event = %kind, state = %n.state, "installer event");
            }
            None => {
                state
                    .inventory
                    .record_event(node.id, &kind, &message, now_ms())?;
            }
        }
        state.events.notify();
        Ok(text_ok())
    })
    .await
}

fn text_ok() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::net::Ipv4Addr;

    fn cfg() -> Config {
        Config::parse_with(
            "[server]\nadvertise = \"192.0.2.1\"\nsyslog = \"0.0.0.0:5514\"\n[boot]\nconsole = \"ttyS0,115200n8\"\nkernel_args = [\"net.ifnames=0\"]\n[dhcp]\nmode = \"authoritative\"\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.110\"\ndomain = \"prov.example\"\n",
            "t",
            &|_| None,
        )
        .unwrap()
    }

    fn node() -> Node {
        Node {
            id: 7,
            hostname: Some("web1".into()),
            ip: Some(Ipv4Addr::new(192, 0, 2, 20)),
            ..crate::plan::sample_node("lab", crate::plan::Firmware::Bios, serde_json::Value::Null)
        }
    }

    #[test]
    fn installer_arguments() {
        let c = cfg();
        let n = node();
        let a = kernel_args(
            &c,
            &NodeCtx::new(&n, &node_domain(&c, &n)),
            installer_nic_of(&n, None),
            "TOKEN",
        );
        assert_eq!(
            a,
            "auto=true priority=critical url=http://192.0.2.1:8080/install/TOKEN/preseed.cfg log_host=192.0.2.1 log_port=5514 BOOTIF=01-52-54-00-12-34-56 interface=auto hostname=web1 domain=prov.example locale=en_US.UTF-8 keymap=us net.ifnames=0 console=ttyS0,115200n8 --- console=ttyS0,115200n8"
        );
    }

    /// The iPXE install script carries the kernel and initrd URLs with their `?mac=`
    /// query, as `node_script` builds them; every value is written for iPXE.
    #[test]
    fn ipxe_install_scripts_carry_their_urls() {
        let c = cfg();
        let n = node();
        let args = kernel_args(&c, &NodeCtx::new(&n, "prov.example"), n.mac, "TOKEN");
        let inputs = ScriptInputs {
            base_url: &c.server.base_url,
            kernel_url: "http://192.0.2.1:8080/installer/d12/linux?mac=52:54:00:12:34:56".into(),
            initrd_url: "http://192.0.2.1:8080/installer/d12/initrd.gz?mac=52:54:00:12:34:56"
                .into(),
            kernel_args: args,
            retry_secs: 5,
            commission: false,
        };
        let t = render::Templates::embedded();
        let body = render::boot_script(
            &t,
            render::Loader::Ipxe,
            &n.mac.to_string(),
            Some(&n),
            &inputs,
        )
        .unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)));
        assert!(
            body.contains("\nkernel http://192.0.2.1:8080/installer/d12/linux?mac=52:54:00:12:34:56 initrd=initrd.gz auto=true "),
            "{body}"
        );
        assert!(
            body.contains("\ninitrd --name initrd.gz http://192.0.2.1:8080/installer/d12/initrd.gz?mac=52:54:00:12:34:56 || goto failed\n"),
            "{body}"
        );
    }

    #[test]
    fn grub_scripts_quote_every_argument_on_their_own_lines() {
        let c = cfg();
        let n = node();
        let args = kernel_args(&c, &NodeCtx::new(&n, "prov.example"), n.mac, "TOKEN");
        let inputs = ScriptInputs {
            base_url: &c.server.base_url,
            kernel_url: "/installer/linux".into(),
            initrd_url: "/installer/initrd.gz".into(),
            kernel_args: args,
            retry_secs: 5,
            commission: false,
        };
        let t = render::Templates::embedded();
        let body = render::boot_script(
            &t,
            render::Loader::Grub,
            &n.mac.to_string(),
            Some(&n),
            &inputs,
        )
        .unwrap();
        let lines: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines[1],
            "echo 'rackseed: installing web1 (52:54:00:12:34:56), profile lab'"
        );
        assert!(
            lines[2].starts_with("linux '/installer/linux' 'auto=true' 'priority=critical' 'url=http://192.0.2.1:8080/install/TOKEN/preseed.cfg' "),
            "{body}"
        );
        assert!(
            lines[2].ends_with(" '---' 'console=ttyS0,115200n8'"),
            "{body}"
        );
        assert_eq!(lines[3], "initrd '/installer/initrd.gz'");
        assert_eq!(lines[4], "boot");
        let done = Node {
            state: NodeState::Installed,
            ..node()
        };
        let local = render::boot_script(
            &t,
            render::Loader::Grub,
            "52:54:00:12:34:56",
            Some(&done),
            &inputs,
        )
        .unwrap();
        assert!(local.trim_end().ends_with("\nexit"), "{local}");
        let unknown =
            render::boot_script(&t, render::Loader::Grub, "52:54:00:12:34:57", None, &inputs)
                .unwrap();
        assert!(
            unknown.contains(
                "configfile '/debian-installer/amd64/grub/rackseed/52:54:00:12:34:57.cfg'"
            ),
            "{unknown}"
        );
    }

    #[test]
    fn the_installer_nic_can_differ_from_the_boot_nic() {
        let c = cfg();
        let n = Node {
            vars: serde_json::json!({"installer_nic": "52:54:00:aa:bb:cc"}),
            ..node()
        };
        let a = kernel_args(&c, &NodeCtx::new(&n, "x"), installer_nic_of(&n, None), "T");
        assert!(
            a.contains(" BOOTIF=01-52-54-00-aa-bb-cc interface=auto "),
            "{a}"
        );
        // A profile's installer NIC applies when the node names none; the node's wins.
        let p = crate::profiles::Profile {
            installer_nic: Some("52:54:00:dd:ee:ff".into()),
            ..Default::default()
        };
        assert_eq!(
            installer_nic_of(&node(), Some(&p)).to_string(),
            "52:54:00:dd:ee:ff"
        );
        assert_eq!(
            installer_nic_of(&n, Some(&p)).to_string(),
            "52:54:00:aa:bb:cc"
        );
        let mut ask = cfg();
        ask.boot.installer_interface = crate::config::InstallerInterface::Ask;
        let a = kernel_args(
            &ask,
            &NodeCtx::new(&n, "x"),
            installer_nic_of(&n, None),
            "T",
        );
        assert!(!a.contains("BOOTIF") && !a.contains("interface="), "{a}");
    }

    #[test]
    fn qualified_hostname_gives_the_domain() {
        let c = cfg();
        let n = Node {
            hostname: Some("db1.dc2.example".into()),
            ..node()
        };
        assert_eq!(node_domain(&c, &n), "dc2.example");
        let nctx = NodeCtx::new(&n, "dc2.example");
        assert_eq!(
            (nctx.hostname.as_str(), nctx.fqdn.as_str()),
            ("db1", "db1.dc2.example")
        );
    }

    #[test]
    fn the_plan_is_served_as_json() {
        assert_eq!(install_file_type("plan.json"), "application/json");
        assert_eq!(
            install_file_type("preseed.cfg"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(install_file_type("late.sh"), "text/plain; charset=utf-8");
    }

    #[test]
    fn event_kinds() {
        assert!(valid_kind("early_command"));
        for bad in ["", "Early", "a/b", "x y", &"a".repeat(33)] {
            assert!(!valid_kind(bad), "{bad}");
        }
    }
}
