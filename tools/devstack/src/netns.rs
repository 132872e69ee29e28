//! Separate hosts on one machine: each a network namespace joined to this one by a veth pair,
//! with its own address, so a test can cut one host off the network and bring it back.

use std::process::Command;

use anyhow::{Context, Result, bail};

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A command running `program` in the network namespace `namespace`, and only there: `nsenter`
/// joins the namespace `ip netns add` made. (`ip netns exec` and `ip -n` also make a mount
/// namespace and remount `/` as a slave, which a chroot or a container without its own root
/// mount refuses.)
fn in_namespace(namespace: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{namespace}")).arg(program);
    cmd
}

/// `ip args` inside `namespace`.
fn ip_in(namespace: &str, args: &[&str]) -> Result<()> {
    let out = in_namespace(namespace, "ip").args(args).output().context("running nsenter (util-linux) and ip")?;
    if !out.status.success() {
        bail!("ip {} (in {namespace}): {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One host: a network namespace with the address `address`, reaching this machine (etcd,
/// caches) at `gateway`. Removed when dropped.
#[derive(Debug)]
pub struct NetHost {
    /// The namespace's name.
    pub namespace: String,
    /// The host's address.
    pub address: String,
    /// This machine's address as the host sees it.
    pub gateway: String,
    veth: String,
}

impl NetHost {
    /// Makes host `index` (0 to 249) of a set named by `tag` (unique per process).
    pub fn create(tag: u16, index: u16) -> Result<Self> {
        anyhow::ensure!(index < 250, "at most 250 hosts per set");
        let namespace = format!("sb-{tag:04x}-{index}");
        let veth = format!("sb{tag:04x}{index:03}");
        // Two sets made at once by different processes stay apart by their tag.
        let subnet = format!("10.{}.{index}", 20 + tag % 200);
        let host = Self { address: format!("{subnet}.2"), gateway: format!("{subnet}.1"), namespace, veth };
        let _ = ip(&["netns", "del", &host.namespace]);
        let _ = ip(&["link", "del", &host.veth]);
        let peer = format!("{}h", host.veth);
        ip(&["netns", "add", &host.namespace])?;
        ip(&["link", "add", &host.veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &host.namespace])?;
        ip(&["addr", "add", &format!("{}/24", host.gateway), "dev", &host.veth])?;
        ip(&["link", "set", &host.veth, "up"])?;
        let ns = host.namespace.clone();
        ip_in(&ns, &["addr", "add", &format!("{}/24", host.address), "dev", &peer])?;
        ip_in(&ns, &["link", "set", &peer, "up"])?;
        ip_in(&ns, &["link", "set", "lo", "up"])?;
        // Everything else (the service address of etcd and the caches) is through this machine.
        ip_in(&ns, &["route", "add", "default", "via", &host.gateway])?;
        Ok(host)
    }

    /// A command that runs `program` inside the host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_namespace(&self.namespace, program)
    }

    /// Cuts the host off the network (its link goes down).
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.veth, "down"])
    }

    /// Joins it to the network again.
    pub fn reconnect(&self) -> Result<()> {
        ip(&["link", "set", &self.veth, "up"])
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours.
        let _ = ip(&["netns", "del", &self.namespace]);
        let _ = ip(&["link", "del", &self.veth]);
    }
}

/// An address of this machine that every host of a set reaches through its own link (held by
/// the loopback interface), where etcd and the caches listen: a host cut off loses it, the
/// others keep it.
#[derive(Debug)]
pub struct ServiceAddress {
    /// The address.
    pub address: String,
}

/// Where each set's owner is recorded (`<tag>` holds its pid), so a set whose process died
/// without cleaning up (a statically held world, a crash) is swept by the next one.
const OWNERS: &str = "/run/signalbox-hosts";

fn address_of(tag: u16) -> String {
    format!("10.{}.254.1", 20 + tag % 200)
}

/// Removes the namespaces and service addresses of sets whose owning process is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(OWNERS) else { return };
    for entry in entries.flatten() {
        let Some(tag) = entry.file_name().to_str().and_then(|t| u16::from_str_radix(t, 16).ok()) else { continue };
        let pid = std::fs::read_to_string(entry.path()).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        let _ = ip(&["addr", "del", &format!("{}/32", address_of(tag)), "dev", "lo"]);
        let prefix = format!("sb-{tag:04x}-");
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(ns) = line.split_whitespace().next().filter(|ns| ns.starts_with(&prefix)) {
                    let _ = ip(&["netns", "del", ns]);
                }
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

impl ServiceAddress {
    /// The service address of the set named by `tag`.
    pub fn create(tag: u16) -> Result<Self> {
        sweep_stale();
        std::fs::create_dir_all(OWNERS).context("recording the owner of a host set")?;
        std::fs::write(format!("{OWNERS}/{tag:04x}"), std::process::id().to_string()).context("recording the owner of a host set")?;
        let address = address_of(tag);
        let cidr = format!("{address}/32");
        let _ = ip(&["addr", "del", &cidr, "dev", "lo"]);
        ip(&["addr", "add", &cidr, "dev", "lo"])?;
        Ok(Self { address })
    }
}

impl Drop for ServiceAddress {
    fn drop(&mut self) {
        let _ = ip(&["addr", "del", &format!("{}/32", self.address), "dev", "lo"]);
    }
}
