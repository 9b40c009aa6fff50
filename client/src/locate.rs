//! Where a client's bundle is: `--bundle`/`bundle=` first, then `BRAMBLE_BUNDLE`, then the
//! profile's own (`$BRAMBLE_HOME/<profile>/security/client.json`, the profile from the
//! argument, `BRAMBLE_PROFILE` or `default`). `BRAMBLE_HOME` defaults to
//! `$XDG_CONFIG_HOME/bramble`, else `~/.config/bramble`.

use std::path::{Path, PathBuf};

use bramble_certs::{Bundle, Role};

use crate::ClientError;

/// The directory holding every profile.
pub fn home() -> Result<PathBuf, ClientError> {
    if let Some(h) = std::env::var_os("BRAMBLE_HOME") {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("bramble"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| ClientError::Bundle("HOME is not set (set BRAMBLE_HOME)".into()))?;
    Ok(PathBuf::from(home).join(".config/bramble"))
}

/// The directory of profile `name`.
pub fn profile_dir(name: &str) -> Result<PathBuf, ClientError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(ClientError::Bundle(format!(
            "invalid profile name {name:?}"
        )));
    }
    Ok(home()?.join(name))
}

/// The local client bundle of a profile directory.
pub fn client_bundle_path(profile_dir: &Path) -> PathBuf {
    profile_dir.join("security").join("client.json")
}

/// Loads the client bundle to connect with (see the module docs for the order).
pub fn load_bundle(profile: Option<&str>, bundle: Option<&Path>) -> Result<Bundle, ClientError> {
    let explicit = bundle
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("BRAMBLE_BUNDLE").map(PathBuf::from));
    let bundle = match explicit {
        Some(path) => Bundle::load(&path).map_err(|e| {
            let hint = match &e {
                bramble_certs::CertsError::Io { error, .. }
                    if error.kind() == std::io::ErrorKind::NotFound =>
                {
                    " (make one on the host with `bramble client-bundle NAME`)"
                }
                _ => "",
            };
            ClientError::Bundle(format!("cannot use the client bundle: {e}{hint}"))
        })?,
        None => {
            let name = match profile {
                Some(p) => p.to_owned(),
                None => std::env::var("BRAMBLE_PROFILE").unwrap_or_else(|_| "default".into()),
            };
            let dir = profile_dir(&name)?;
            let path = client_bundle_path(&dir);
            if !path.exists() && !dir.join("host.toml").exists() {
                return Err(ClientError::Bundle(format!(
                    "no profile at {} (run `bramble init`, or give a client bundle: --bundle FILE or BRAMBLE_BUNDLE)",
                    dir.display()
                )));
            }
            Bundle::load(&path)
                .map_err(|e| ClientError::Bundle(format!("cannot use the client bundle: {e}")))?
        }
    };
    if bundle.role != Role::Client {
        return Err(ClientError::Bundle(format!(
            "bundle {:?} is a {} bundle; clients need one from `bramble client-bundle`",
            bundle.name, bundle.role
        )));
    }
    Ok(bundle)
}
