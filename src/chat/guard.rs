//! Memory bounds for a template run. Fuel bounds steps, but one step can
//! double a string (`s ~ s`, `s + s`, `{% set s %}{{ s }}{{ s }}{% endset %}`),
//! so 40 steps would ask for a terabyte. minijinja has no allocation hook,
//! so the compiled template is rewritten before it runs:
//!
//! - `~`, `+` and `*` become calls of functions that check the size of the
//!   result before building it, and charge it to the run's budget;
//! - literal text is emitted through the formatter like `{{ }}` output, and
//!   the formatter charges every byte written, captures (`set` blocks,
//!   macros) included;
//! - the filters and Python methods that can grow a string in one call
//!   (`join`, `replace`, `format`, `tojson`) check their result's size first.
//!
//! Limits, from [`TemplateLimits::max_output_bytes`] (M): one value built
//! by these at most M bytes, all of them together at most [`CREATED_FACTOR`]
//! × M, everything emitted (captures included) at most M, a sequence built
//! by `+`/`*` at most [`MAX_SEQ_ITEMS`] items. Exceeding one ends the run
//! with [`ChatError::OutputTooLarge`](super::ChatError::OutputTooLarge).
//!
//! The template never enters the environment, so `include`/`import` find
//! nothing to run unguarded, and names starting with `__rk_` are refused so
//! that a template cannot replace the guard functions.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use minijinja::machinery::{CompiledTemplate, Instruction, Instructions, TemplateConfig, Vm};
use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State};

use super::template::TemplateLimits;

/// The budget of all values built, as a multiple of the output cap.
pub const CREATED_FACTOR: usize = 8;
/// Bytes a list item is charged.
const ITEM_BYTES: u64 = std::mem::size_of::<Value>() as u64;
/// Names reserved for the guard functions.
pub const RESERVED_PREFIX: &str = "__rk_";

const CONCAT: &str = "__rk_concat";
const ADD: &str = "__rk_add";
const MUL: &str = "__rk_mul";

/// What one run may still build and emit.
struct Budget {
    max_value: usize,
    created_left: usize,
    emitted_left: usize,
    /// Set once a limit is hit: the limit, for the error.
    exceeded: Option<usize>,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// The error of a refused value, recorded as the run's outcome.
fn too_large(what: &str) -> Error {
    BUDGET.with(|b| {
        if let Some(b) = b.borrow_mut().as_mut() {
            b.exceeded.get_or_insert(b.max_value);
        }
    });
    refusal(what)
}

fn refusal(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("the template builds too much text ({what})"),
    )
}

/// Charges `bytes` to the run, `emitted` or built; an error past a limit
/// (and outside a guarded run, which never happens).
fn charge(bytes: usize, emitted: bool) -> Result<(), Error> {
    BUDGET.with(|b| {
        let mut b = b.borrow_mut();
        let Some(b) = b.as_mut() else {
            return Err(refusal("no budget"));
        };
        let (left, limit) = if emitted {
            let limit = b.max_value;
            (&mut b.emitted_left, limit)
        } else {
            let limit = b.max_value.saturating_mul(CREATED_FACTOR);
            if bytes > b.max_value {
                b.exceeded = Some(b.max_value);
                return Err(refusal("one value over the limit"));
            }
            (&mut b.created_left, limit)
        };
        match left.checked_sub(bytes) {
            Some(rest) => {
                *left = rest;
                Ok(())
            }
            None => {
                b.exceeded = Some(limit);
                Err(refusal("over the budget of the run"))
            }
        }
    })
}

/// The largest value the run may build.
fn max_value() -> usize {
    BUDGET.with(|b| b.borrow().as_ref().map_or(0, |b| b.max_value))
}

/// A `String` that refuses to grow past `limit` (then formatting stops).
struct CappedString {
    text: String,
    limit: usize,
}

impl fmt::Write for CappedString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.text.len() + s.len() > self.limit {
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

/// `value` as text, refused when longer than a value may be (a sequence
/// repeated a million times prints without being built).
fn display(value: &Value) -> Result<std::borrow::Cow<'_, str>, Error> {
    if let Some(s) = value.as_str() {
        return Ok(s.into());
    }
    let limit = max_value();
    // Every item prints at least one byte: a longer list is refused
    // before it is walked (a repeated list is long without being built).
    if value.len().is_some_and(|n| n > limit) {
        return Err(too_large("a list prints too long"));
    }
    let mut out = CappedString {
        text: String::new(),
        limit,
    };
    write!(out, "{value}").map_err(|_| too_large("a value prints too long"))?;
    Ok(out.text.into())
}

/// Length of `value` as text, without building it when it is a string.
fn display_len(value: &Value) -> Result<usize, Error> {
    display(value).map(|s| s.len())
}

/// A checked string of `parts` concatenated.
fn concat(parts: &[&Value]) -> Result<Value, Error> {
    let mut total = 0usize;
    for p in parts {
        total = total.saturating_add(display_len(p)?);
    }
    charge(total, false)?;
    let mut s = String::with_capacity(total);
    for p in parts {
        s.push_str(&display(p)?);
    }
    Ok(Value::from(s))
}

/// minijinja's own operator on values a guard let through.
fn plain_op(op: &str, a: Value, b: Value) -> Result<Value, Error> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    let env = ENV.get_or_init(Environment::new);
    let expr = env.compile_expression(op)?;
    expr.eval(minijinja::context! { a => a, b => b })
}

fn seq_len(v: &Value) -> Option<usize> {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
        .then(|| v.len())
        .flatten()
}

/// Charges a list of `items` values.
fn charge_items(items: u64) -> Result<(), Error> {
    let bytes = items.saturating_mul(ITEM_BYTES);
    charge(usize::try_from(bytes).unwrap_or(usize::MAX), false)
}

fn guarded_concat(a: Value, b: Value) -> Result<Value, Error> {
    concat(&[&a, &b])
}

fn guarded_add(a: Value, b: Value) -> Result<Value, Error> {
    if a.as_str().is_some() && b.as_str().is_some() {
        return concat(&[&a, &b]);
    }
    if let (Some(x), Some(y)) = (seq_len(&a), seq_len(&b)) {
        charge_items((x as u64).saturating_add(y as u64))?;
    }
    plain_op("a + b", a, b)
}

fn guarded_mul(a: Value, b: Value) -> Result<Value, Error> {
    let times = |n: &Value| i64::try_from(n.clone()).ok().map(|n| n.max(0) as u64);
    for (x, n) in [(&a, &b), (&b, &a)] {
        let Some(n) = times(n) else { continue };
        if let Some(s) = x.as_str() {
            let bytes = (s.len() as u64).saturating_mul(n);
            charge(usize::try_from(bytes).unwrap_or(usize::MAX), false)?;
        } else if let Some(len) = seq_len(x) {
            charge_items((len as u64).saturating_mul(n))?;
        }
    }
    plain_op("a * b", a, b)
}

/// Every `{{ }}` (and, after the rewrite, every literal text) is written
/// here: charged, then written as minijinja would.
fn formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    charge(display_len(value)?, true)?;
    minijinja::escape_formatter(out, state, value)
}

/// `join` with its size checked first.
fn join_filter(value: &Value, joiner: Option<Value>) -> Result<Value, Error> {
    let joiner = joiner.unwrap_or_else(|| Value::from(""));
    let mut parts = Vec::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            parts.push(joiner.clone());
        }
        parts.push(item);
    }
    let refs: Vec<&Value> = parts.iter().collect();
    concat(&refs)
}

/// `replace(old, new[, count])` with its size checked first.
fn replace_filter(
    value: String,
    old: String,
    new: String,
    count: Option<i64>,
) -> Result<Value, Error> {
    let found = if old.is_empty() {
        value.chars().count() + 1
    } else {
        value.matches(old.as_str()).count()
    };
    let n = match count {
        Some(c) if c >= 0 => found.min(c as usize),
        _ => found,
    };
    let grows = new.len().saturating_sub(old.len()).saturating_mul(n);
    charge(value.len().saturating_add(grows), false)?;
    Ok(Value::from(match count {
        Some(c) if c >= 0 => value.replacen(old.as_str(), &new, c as usize),
        _ => value.replace(old.as_str(), &new),
    }))
}

/// `format` with its size checked first (each argument printed once).
fn format_filter(state: &State, format: &Value, args: Rest<Value>) -> Result<Value, Error> {
    let mut total = display_len(format)?;
    for a in args.iter() {
        total = total.saturating_add(display_len(a)?);
    }
    charge(total, false)?;
    minijinja::filters::format(state, format, args)
}

/// Python's string methods (minijinja_contrib), those that grow a string
/// in one call checked first, every result charged.
fn method_callback(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if value.as_str().is_some() {
        match (method, args) {
            ("replace", [old, new, rest @ ..]) => {
                let count = rest.first().and_then(|c| i64::try_from(c.clone()).ok());
                return replace_filter(
                    display(value)?.into_owned(),
                    display(old)?.into_owned(),
                    display(new)?.into_owned(),
                    count,
                );
            }
            ("join", [items]) => return join_filter(items, Some(value.clone())),
            ("format", _) => {
                let mut total = display_len(value)?;
                for a in args {
                    total = total.saturating_add(display_len(a)?);
                }
                charge(total, false)?;
            }
            _ => {}
        }
    }
    let result = minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)?;
    if let Some(s) = result.as_str() {
        charge(s.len(), false)?;
    }
    Ok(result)
}

/// Sets the guard functions, filters, formatter and methods on `env`.
pub fn install(env: &mut Environment<'static>) {
    env.add_function(CONCAT, guarded_concat);
    env.add_function(ADD, guarded_add);
    env.add_function(MUL, guarded_mul);
    env.add_filter("join", join_filter);
    env.add_filter("replace", replace_filter);
    env.add_filter("format", format_filter);
    env.set_formatter(formatter);
    env.set_unknown_method_callback(method_callback);
}

/// Charges text a filter of the template module built (e.g. `tojson`).
pub fn charge_built(bytes: usize) -> Result<(), Error> {
    charge(bytes, false)
}

/// The settings chat templates compile with (as transformers' and
/// llama.cpp's: trim_blocks, lstrip_blocks).
fn config() -> TemplateConfig {
    TemplateConfig {
        syntax_config: Default::default(),
        ws_config: minijinja::machinery::WhitespaceConfig {
            keep_trailing_newline: false,
            lstrip_blocks: true,
            trim_blocks: true,
        },
        default_auto_escape: Arc::new(|_| AutoEscape::None),
    }
}

/// Compiles `source`: the syntax check, and the code a run rewrites.
pub fn compile<'s>(name: &'s str, source: &'s str) -> Result<CompiledTemplate<'s>, Error> {
    if source.contains(RESERVED_PREFIX) {
        return Err(Error::new(
            ErrorKind::SyntaxError,
            format!("names starting with {RESERVED_PREFIX} are reserved"),
        ));
    }
    CompiledTemplate::new(name, source, &config())
}

/// `code` with the guards in: `~`, `+`, `*` as guard calls, literal text
/// as a constant through the formatter; jump targets moved to match.
fn rewrite<'s>(code: &Instructions<'s>) -> Instructions<'s> {
    let n = code.len() as u32;
    let width = |i: u32| match code.get(i) {
        Some(Instruction::EmitRaw(_)) => 2,
        _ => 1,
    };
    let mut at = Vec::with_capacity(code.len() + 1);
    let mut next = 0u32;
    for i in 0..n {
        at.push(next);
        next += width(i);
    }
    at.push(next);
    let to = |t: u32| at.get(t as usize).copied().unwrap_or(next);
    let mut out = Instructions::new(code.name(), code.source());
    for i in 0..n {
        let Some(instr) = code.get(i) else { break };
        let mut add = |new: Instruction<'s>| match (code.get_span(i), code.get_line(i)) {
            (Some(span), _) => out.add_with_span(new, span),
            (None, Some(line)) => out.add_with_line(new, u16::try_from(line).unwrap_or(u16::MAX)),
            (None, None) => out.add(new),
        };
        match instr {
            Instruction::EmitRaw(text) => {
                add(Instruction::LoadConst(Value::from(*text)));
                add(Instruction::Emit);
            }
            Instruction::StringConcat => {
                add(Instruction::CallFunction(CONCAT, Some(2)));
            }
            Instruction::Add => {
                add(Instruction::CallFunction(ADD, Some(2)));
            }
            Instruction::Mul => {
                add(Instruction::CallFunction(MUL, Some(2)));
            }
            Instruction::Jump(t) => {
                add(Instruction::Jump(to(*t)));
            }
            Instruction::JumpIfFalse(t) => {
                add(Instruction::JumpIfFalse(to(*t)));
            }
            Instruction::JumpIfFalseOrPop(t) => {
                add(Instruction::JumpIfFalseOrPop(to(*t)));
            }
            Instruction::JumpIfTrueOrPop(t) => {
                add(Instruction::JumpIfTrueOrPop(to(*t)));
            }
            Instruction::Iterate(t) => {
                add(Instruction::Iterate(to(*t)));
            }
            Instruction::BuildMacro(name, t, flags) => {
                add(Instruction::BuildMacro(name, to(*t), *flags));
            }
            other => {
                add(other.clone());
            }
        }
    }
    out
}

/// Why a guarded run failed.
pub enum RunError {
    /// A memory limit (the limit).
    TooLarge(usize),
    /// Anything else minijinja reports (fuel, syntax, raised, ...).
    Template(Error),
}

/// Runs `source` on `env` with `root` as its variables, under `limits`.
pub fn render(
    env: &Environment<'static>,
    name: &str,
    source: &str,
    root: Value,
    limits: &TemplateLimits,
) -> Result<String, RunError> {
    let compiled = compile(name, source).map_err(RunError::Template)?;
    let code = rewrite(&compiled.instructions);
    let blocks = compiled
        .blocks
        .iter()
        .map(|(k, v)| (*k, rewrite(v)))
        .collect();
    BUDGET.with(|b| {
        *b.borrow_mut() = Some(Budget {
            max_value: limits.max_output_bytes,
            created_left: limits.max_output_bytes.saturating_mul(CREATED_FACTOR),
            emitted_left: limits.max_output_bytes,
            exceeded: None,
        })
    });
    let mut text = String::new();
    let result = Vm::new(env)
        .eval(
            &code,
            root,
            &blocks,
            &mut minijinja::machinery::make_string_output(&mut text),
            compiled.initial_auto_escape,
        )
        .map(|_| ());
    let exceeded = BUDGET.with(|b| b.borrow_mut().take().and_then(|b| b.exceeded));
    match (result, exceeded) {
        (_, Some(limit)) => Err(RunError::TooLarge(limit)),
        (Err(e), None) => Err(RunError::Template(e)),
        (Ok(()), None) => Ok(text),
    }
}
