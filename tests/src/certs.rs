//! Certificates and keys of one simulated cluster, made with Debian's openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Files of a cluster's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// CA certificate (signs serving and client certificates).
    pub ca_crt: PathBuf,
    /// CA key.
    pub ca_key: PathBuf,
    /// kube-apiserver serving certificate.
    pub server_crt: PathBuf,
    /// kube-apiserver serving key.
    pub server_key: PathBuf,
    /// Admin client certificate (`O=system:masters`).
    pub admin_crt: PathBuf,
    /// Admin client key.
    pub admin_key: PathBuf,
    /// Service-account signing key.
    pub sa_key: PathBuf,
    /// Service-account public key.
    pub sa_pub: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl (apt-get install openssl)")?;
    if !out.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn signed_cert(dir: &Path, name: &str, subject: &str, extensions: &str) -> Result<()> {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions)?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "3650",
            "-extfile",
            &ext,
        ],
    )?;
    Ok(())
}

/// Creates (or reuses, when present) the PKI of one cluster in `dir`.
pub fn create(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir)?;
    let pki = Pki {
        ca_crt: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_crt: dir.join("apiserver.crt"),
        server_key: dir.join("apiserver.key"),
        admin_crt: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    if pki.sa_pub.exists() {
        return Ok(pki);
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=kdfed-testbed-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
    )?;
    signed_cert(
        dir,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n",
    )?;
    signed_cert(
        dir,
        "admin",
        "/O=system:masters/CN=kdfed-admin",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )?;
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(pki)
}

/// An admin kubeconfig for the API server at `server`, naming certificate files by path.
pub fn admin_kubeconfig(pki: &Pki, cluster: &str, server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-admin\ncurrent-context: {cluster}\nusers:\n- name: {cluster}-admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n",
        ca = pki.ca_crt.display(),
        crt = pki.admin_crt.display(),
        key = pki.admin_key.display(),
    )
}

/// A serving certificate for a webhook on 127.0.0.1, signed by the cluster's CA in
/// `pki_dir`; returns (certificate, key, CA). Calling it again issues a new certificate
/// (new serial) in the same files, which is how tests rotate it.
pub fn webhook_cert(pki_dir: &Path, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    signed_cert(
        pki_dir,
        name,
        &format!("/CN={name}"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    Ok((pki_dir.join(format!("{name}.crt")), pki_dir.join(format!("{name}.key")), pki_dir.join("ca.crt")))
}

/// The flags that serve kdfed's admission webhook on `127.0.0.1:port` with the certificate
/// files of [`webhook_cert`] and register it at `url` (where the API server calls it).
pub fn webhook_flags(port: u16, (crt, key, ca): &(PathBuf, PathBuf, PathBuf), url: &str) -> Vec<String> {
    vec![
        "--webhook-address".into(),
        format!("127.0.0.1:{port}"),
        "--webhook-cert-file".into(),
        crt.display().to_string(),
        "--webhook-key-file".into(),
        key.display().to_string(),
        "--webhook-ca-file".into(),
        ca.display().to_string(),
        "--webhook-url".into(),
        url.to_string(),
    ]
}
