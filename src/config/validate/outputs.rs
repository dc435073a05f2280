//! Validating an account's outputs: paths (absolute, unique, outside the state directory),
//! formats, modes, owners and groups.

use std::ops::Range;

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawId, RawOutput};
use crate::config::values::{check_output_path, default_env_name, valid_env_name};
use crate::output::{Format, OutputSpec, Template};

impl Validator {
    pub(super) fn outputs(
        &mut self,
        account: &str,
        prefix: &str,
        raw: &[Spanned<RawOutput>],
        account_span: &Range<usize>,
        default_mode: u32,
    ) -> Vec<OutputSpec> {
        if raw.is_empty() {
            self.problem(
                Some(account_span.clone()),
                &format!("{prefix}.outputs"),
                "no outputs: add at least one [[accounts.NAME.outputs]] with a `path`",
            );
        }
        let mut outputs = Vec::new();
        for (index, output) in raw.iter().enumerate() {
            let key = |suffix: &str| format!("{prefix}.outputs[{index}].{suffix}");
            let raw = output.get_ref();
            let path = match check_output_path(raw.path.get_ref()) {
                Ok(path) => Some(path),
                Err(message) => {
                    self.problem(Some(raw.path.span()), &key("path"), message);
                    None
                }
            };
            if let Some(path) = &path
                && let Some(state_dir) = &self.state_dir
                && path.starts_with(state_dir)
            {
                let message = format!(
                    "{} is inside the state directory {}, which only the daemon may read; write outputs where consumers read them",
                    path.display(),
                    state_dir.display()
                );
                self.problem(Some(raw.path.span()), &key("path"), message);
            }
            if let Some(path) = &path {
                if let Some(other) = self.output_paths.get(path) {
                    let message = format!("{} is also the path of {other}", path.display());
                    self.problem(Some(raw.path.span()), &key("path"), message);
                } else {
                    self.output_paths.insert(path.clone(), key("path"));
                }
            }
            let format = match raw.format.as_ref() {
                None => Format::Raw,
                Some(value) => Format::from_name(value.get_ref()).unwrap_or_else(|| {
                    let names: Vec<&str> = Format::ALL.iter().map(|format| format.name()).collect();
                    self.problem(
                        Some(value.span()),
                        &key("format"),
                        format!(
                            "unknown format `{}`, expected one of {}",
                            value.get_ref(),
                            names.join(", ")
                        ),
                    );
                    Format::Raw
                }),
            };
            let mode = match &raw.mode {
                Some(value) => self.mode(value, &key("mode")).unwrap_or(default_mode),
                None => default_mode,
            };
            let owner = raw
                .owner
                .as_ref()
                .and_then(|value| self.user(value, &key("owner")));
            let group = raw
                .group
                .as_ref()
                .and_then(|value| self.group(value, &key("group")));
            let env_name = match (&raw.var, format) {
                (Some(var), Format::Env) => {
                    if !valid_env_name(var.get_ref()) {
                        self.problem(
                            Some(var.span()),
                            &key("var"),
                            "a variable name is letters, digits and `_`, not starting with a digit",
                        );
                    }
                    var.get_ref().clone()
                }
                (Some(var), _) => {
                    self.problem(
                        Some(var.span()),
                        &key("var"),
                        "`var` only applies to format = \"env\"",
                    );
                    String::new()
                }
                (None, _) => default_env_name(account),
            };
            let template = match (&raw.template, format) {
                (Some(text), Format::Template) => match Template::parse(text.get_ref()) {
                    Ok(template) => Some(template),
                    Err(message) => {
                        self.problem(Some(text.span()), &key("template"), message);
                        None
                    }
                },
                (None, Format::Template) => {
                    self.problem(
                        Some(output.span()),
                        &key("template"),
                        "format = \"template\" needs a `template`, e.g. template = \"Bearer {token}\\n\"",
                    );
                    None
                }
                (Some(text), _) => {
                    self.problem(
                        Some(text.span()),
                        &key("template"),
                        "`template` only applies to format = \"template\"",
                    );
                    None
                }
                (None, _) => None,
            };
            if let Some(path) = path {
                outputs.push(OutputSpec {
                    path,
                    format,
                    mode,
                    owner,
                    group,
                    env_name,
                    template,
                });
            }
        }
        outputs
    }

    pub(super) fn user(&mut self, value: &Spanned<RawId>, key: &str) -> Option<u32> {
        self.account_id(value, key, "user", |name| {
            nix::unistd::User::from_name(name).map(|user| user.map(|user| user.uid.as_raw()))
        })
    }

    pub(super) fn group(&mut self, value: &Spanned<RawId>, key: &str) -> Option<u32> {
        self.account_id(value, key, "group", |name| {
            nix::unistd::Group::from_name(name).map(|group| group.map(|group| group.gid.as_raw()))
        })
    }

    /// A user or group id: a number as written, or a name looked up through NSS.
    fn account_id(
        &mut self,
        value: &Spanned<RawId>,
        key: &str,
        what: &str,
        lookup: impl Fn(&str) -> nix::Result<Option<u32>>,
    ) -> Option<u32> {
        match value.get_ref() {
            RawId::Number(id) => Some(*id),
            RawId::Name(name) => match lookup(name) {
                Ok(Some(id)) => Some(id),
                Ok(None) => {
                    self.problem(Some(value.span()), key, format!("no {what} named `{name}`"));
                    None
                }
                Err(error) => {
                    let message = format!("cannot look up {what} `{name}`: {error}");
                    self.problem(Some(value.span()), key, message);
                    None
                }
            },
        }
    }
}
