//! A private PKI for HTTPS tests, made by the `openssl` CLI at test time: an EC P-256 CA and a
//! leaf certificate it signed for `IP:127.0.0.1` only. Used by `tls.rs` (the token endpoint the
//! daemon logs in to) and `credential.rs` (the API server kubectl calls).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The EC P-256 CA and the leaf it signed for `IP:127.0.0.1` only, as files in one directory.
pub struct Pki {
    pub ca_pem: PathBuf,
    /// The same CA in DER: the likeliest wrong file to be given as `ca_file`.
    pub ca_der: PathBuf,
    pub leaf_pem: PathBuf,
    pub leaf_key: PathBuf,
}

/// Extension sections for `openssl`. The leaf must be a separate certificate signed by the CA:
/// rustls (webpki) refuses a CA certificate presented as a server's own, so a single self-signed
/// certificate would fail even with `ca_file` and prove nothing.
const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

impl Pki {
    /// Makes a new CA and leaf in `dir` (created if missing) with the `openssl` CLI.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("create the pki directory");
        // An explicit config keeps the result independent of the system's openssl.cnf.
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CONFIG).expect("write openssl.cnf");
        let p256 = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(
            dir,
            &format!(
                "req -x509 -config openssl.cnf -extensions ca {p256} -keyout ca.key -out ca.pem \
                 -days 2 -subj /CN=tokenkeeper-test-CA"
            ),
        );
        openssl(
            dir,
            &format!(
                "req -new -config openssl.cnf {p256} -keyout leaf.key -out leaf.csr \
                 -subj /CN=127.0.0.1"
            ),
        );
        openssl(
            dir,
            "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
             -extfile openssl.cnf -extensions leaf -out leaf.pem",
        );
        openssl(dir, "x509 -in ca.pem -outform DER -out ca.der");
        Pki {
            ca_pem: dir.join("ca.pem"),
            ca_der: dir.join("ca.der"),
            leaf_pem: dir.join("leaf.pem"),
            leaf_key: dir.join("leaf.key"),
        }
    }
}

/// Runs `openssl` in `dir` with the whitespace-separated `args`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
