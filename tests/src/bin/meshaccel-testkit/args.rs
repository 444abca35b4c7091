//! `--key value` and `--flag` arguments.
use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(argv: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = argv.iter().peekable();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else { bail!("unexpected argument {a:?}") };
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap().clone(),
                _ => "true".to_string(),
            };
            map.insert(key.to_string(), value);
        }
        Ok(Self(map))
    }

    pub fn get<T: FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.0.get(key).with_context(|| format!("--{key} is required"))?;
        v.parse().map_err(|e| anyhow::anyhow!("--{key} {v:?}: {e}"))
    }

    pub fn get_or<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        if self.0.contains_key(key) { self.get(key) } else { Ok(default) }
    }

    pub fn flag(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| v == "true")
    }
}
