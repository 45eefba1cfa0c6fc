//! Lua scripts, sent whole once, then by name.
//!
//! Redis runs a script whole, which is why the register's claims and clean-ups are
//! scripts. `EVAL` sends the script's text with every call (a kilobyte or two, each
//! claim, each move); `EVALSHA` sends only its SHA-1, the name Redis files it under.
//! The first call of each script asks Redis for that name (`SCRIPT LOAD`, which
//! returns it: no hashing library needed here), and later calls use it. If Redis no
//! longer has the script (`NOSCRIPT`: it restarted, or someone ran `SCRIPT FLUSH`), the
//! call is made again with `EVAL`, which also files it again. That retry is safe:
//! `NOSCRIPT` means nothing of the script ran.

use std::collections::HashMap;

use parking_lot::Mutex;
use redis::{Connection, ErrorKind, FromRedisValue, RedisResult, ToRedisArgs};

/// Each script's SHA-1 as Redis gave it, by the address and length of the script's
/// text (the scripts are `&'static str` constants, so these name one script for good;
/// at worst, one script under two addresses is loaded twice).
static NAMES: Mutex<Option<HashMap<(usize, usize), String>>> = Mutex::new(None);

/// One call of `script` on `keys`; [`Call::arg`] adds its arguments.
pub(super) fn call(script: &'static str, keys: &[&str]) -> Call {
    Call {
        script,
        keys: keys.iter().map(|key| key.to_string()).collect(),
        args: Vec::new(),
    }
}

/// A script call being built, like a `redis::Cmd`.
pub(super) struct Call {
    script: &'static str,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// Adds an argument (`ARGV[n]`).
    pub(super) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Call {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Runs the script: by its name if Redis has it, by its text if not.
    pub(super) fn query<T: FromRedisValue>(&self, con: &mut Connection) -> RedisResult<T> {
        let name = match name_of(self.script) {
            Some(name) => name,
            None => {
                let name: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(self.script)
                    .query(con)?;
                remember(self.script, &name);
                name
            }
        };
        match self.command("EVALSHA", &name).query(con) {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                self.command("EVAL", self.script).query(con)
            }
            result => result,
        }
    }

    fn command(&self, eval: &str, script: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(eval);
        cmd.arg(script).arg(self.keys.len()).arg(&self.keys);
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }
}

fn name_of(script: &'static str) -> Option<String> {
    NAMES
        .lock()
        .as_ref()
        .and_then(|names| names.get(&place(script)).cloned())
}

fn remember(script: &'static str, name: &str) {
    NAMES
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(place(script), name.to_string());
}

fn place(script: &'static str) -> (usize, usize) {
    (script.as_ptr() as usize, script.len())
}
