//! `response_format: json_schema`: a JSON schema compiled to a [`Grammar`].
//!
//! The subset is what structured-output clients send most: objects with
//! `properties`/`required`/`additionalProperties: false`, maps
//! (`additionalProperties: SCHEMA`), arrays with `items`/`minItems`/
//! `maxItems`, string, number, integer, boolean, null, `enum`, `const`,
//! `anyOf`/`oneOf` and lists of types whose alternatives start differently,
//! and local `$ref`s. Any other keyword is refused, so a reply never claims
//! to follow a schema it was not held to. As in llama.cpp's converter,
//! required properties come first, then optional ones, each group in the
//! order of the keys (serde_json keeps them sorted).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::grammar::{any_value, Grammar, GrammarError, Node, NodeId, Prop, MAX_CHOICES};

/// Keywords that only describe and do not constrain.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "$comment",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
];
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "$ref",
];

/// Compiles `schema`; the error says which part (a JSON pointer) is not
/// supported and why.
pub fn compile(schema: &Value) -> Result<Grammar, String> {
    let mut c = Compiler {
        root: schema,
        nodes: Vec::new(),
        refs: HashMap::new(),
        any: None,
    };
    let root = c.node(schema, "#")?;
    Grammar::new(c.nodes, root).map_err(|e| match e {
        GrammarError::RootNotObject => {
            "the schema's root must be an object (\"type\": \"object\")".to_string()
        }
        GrammarError::Ambiguous { byte, .. } => format!(
            "anyOf/oneOf or a list of types whose alternatives can both start with '{}' (such as two objects, or integer and number) is not supported",
            byte as char
        ),
        GrammarError::UnionTooDeep => "anyOf/oneOf nest too deeply".to_string(),
        GrammarError::BadNode(n) => format!("internal error: schema node {n} is malformed"),
    })
}

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    /// `$ref` targets compiled so far (recursive schemas refer back).
    refs: HashMap<String, NodeId>,
    any: Option<NodeId>,
}

fn list<'v>(m: &'v Map<String, Value>, key: &str, path: &str) -> Result<&'v [Value], String> {
    match m.get(key) {
        Some(Value::Array(v)) if !v.is_empty() => Ok(v),
        _ => Err(format!("{path}/{key}: must be a non-empty array")),
    }
}

fn count(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<usize>, String> {
    match m.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{path}/{key}: must be a non-negative integer")),
    }
}

impl Compiler<'_> {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn any(&mut self) -> NodeId {
        match self.any {
            Some(id) => id,
            None => {
                let id = any_value(&mut self.nodes).0;
                self.any = Some(id);
                id
            }
        }
    }

    fn node(&mut self, schema: &Value, path: &str) -> Result<NodeId, String> {
        let m = match schema {
            Value::Bool(true) => return Ok(self.any()),
            Value::Object(m) => m,
            _ => return Err(format!("{path}: a schema must be an object or true")),
        };
        if let Some(k) = m
            .keys()
            .find(|k| !KEYWORDS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(format!(
                "{path}: the keyword '{k}' is not supported (supported: {})",
                KEYWORDS.join(", ")
            ));
        }
        if let Some(r) = m.get("$ref") {
            return self.reference(r, path);
        }
        if let Some(c) = m.get("const") {
            return Ok(self.push(Node::Literals(vec![c.to_string().into_bytes()])));
        }
        if m.contains_key("enum") {
            let values = list(m, "enum", path)?;
            if values.len() > MAX_CHOICES {
                return Err(format!(
                    "{path}/enum: {} values; at most {MAX_CHOICES} are supported",
                    values.len()
                ));
            }
            let texts = values.iter().map(|v| v.to_string().into_bytes()).collect();
            return Ok(self.push(Node::Literals(texts)));
        }
        for key in ["anyOf", "oneOf"] {
            if m.contains_key(key) {
                let mut alts = Vec::new();
                for (i, alt) in list(m, key, path)?.iter().enumerate() {
                    alts.push(self.node(alt, &format!("{path}/{key}/{i}"))?);
                }
                return Ok(self.push(Node::Union(alts)));
            }
        }
        match m.get("type") {
            None if ["properties", "required", "additionalProperties"]
                .iter()
                .any(|k| m.contains_key(*k)) =>
            {
                self.typed("object", m, path)
            }
            None if ["items", "minItems", "maxItems"]
                .iter()
                .any(|k| m.contains_key(*k)) =>
            {
                self.typed("array", m, path)
            }
            None => Ok(self.any()),
            Some(Value::String(t)) => self.typed(t, m, path),
            Some(Value::Array(types)) if !types.is_empty() => {
                let mut alts = Vec::new();
                for t in types {
                    let Some(t) = t.as_str() else {
                        return Err(format!("{path}/type: must be a string or strings"));
                    };
                    alts.push(self.typed(t, m, path)?);
                }
                Ok(match alts[..] {
                    [one] => one,
                    _ => self.push(Node::Union(alts)),
                })
            }
            Some(_) => Err(format!(
                "{path}/type: must be a string or a non-empty array of strings"
            )),
        }
    }

    fn typed(&mut self, t: &str, m: &Map<String, Value>, path: &str) -> Result<NodeId, String> {
        let node = match t {
            "object" => return self.object(m, path),
            "array" => {
                let items = match m.get("items") {
                    None => self.any(),
                    Some(s @ (Value::Object(_) | Value::Bool(true))) => {
                        self.node(s, &format!("{path}/items"))?
                    }
                    Some(_) => {
                        return Err(format!(
                            "{path}/items: must be one schema (tuples are not supported)"
                        ))
                    }
                };
                let min = count(m, "minItems", path)?.unwrap_or(0);
                let max = count(m, "maxItems", path)?.unwrap_or(usize::MAX);
                if min > max {
                    return Err(format!("{path}: minItems {min} > maxItems {max}"));
                }
                Node::Array { items, min, max }
            }
            "string" => Node::String,
            "number" => Node::Number { integer: false },
            "integer" => Node::Number { integer: true },
            "boolean" => Node::Literals(vec![b"true".to_vec(), b"false".to_vec()]),
            "null" => Node::Literals(vec![b"null".to_vec()]),
            _ => return Err(format!("{path}/type: unknown type '{t}'")),
        };
        Ok(self.push(node))
    }

    fn object(&mut self, m: &Map<String, Value>, path: &str) -> Result<NodeId, String> {
        let empty = Map::new();
        let props = match m.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(format!("{path}/properties: must be an object")),
        };
        let mut required = Vec::new();
        if let Some(r) = m.get("required") {
            let Some(r) = r.as_array() else {
                return Err(format!("{path}/required: must be an array of names"));
            };
            for name in r {
                match name.as_str() {
                    Some(n) if props.contains_key(n) => required.push(n),
                    _ => {
                        return Err(format!(
                            "{path}/required: {name} is not one of the properties"
                        ))
                    }
                }
            }
        }
        match (m.get("additionalProperties"), props.is_empty()) {
            (None | Some(Value::Bool(true)), true) => {
                let any = self.any();
                return Ok(self.push(Node::Map(any)));
            }
            (Some(s @ Value::Object(_)), true) => {
                let value = self.node(s, &format!("{path}/additionalProperties"))?;
                return Ok(self.push(Node::Map(value)));
            }
            (None | Some(Value::Bool(false)), _) => {}
            (Some(_), _) => {
                return Err(format!(
                    "{path}/additionalProperties: only false is supported next to properties"
                ))
            }
        }
        if props.len() > MAX_CHOICES {
            return Err(format!(
                "{path}/properties: {} properties; at most {MAX_CHOICES} are supported",
                props.len()
            ));
        }
        let mut out = Vec::with_capacity(props.len());
        for want_required in [true, false] {
            for (name, schema) in props {
                if required.contains(&name.as_str()) != want_required {
                    continue;
                }
                let value = self.node(schema, &format!("{path}/properties/{name}"))?;
                out.push(Prop {
                    key: Value::String(name.clone()).to_string().into_bytes(),
                    value,
                    required: want_required,
                });
            }
        }
        Ok(self.push(Node::Object(out)))
    }

    fn reference(&mut self, r: &Value, path: &str) -> Result<NodeId, String> {
        let target = r
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| self.root.pointer(pointer).map(|t| (pointer, t)));
        let Some((pointer, target)) = target else {
            return Err(format!(
                "{path}/$ref: {r} is not a reference into this schema (such as \"#/$defs/Name\")"
            ));
        };
        if let Some(&id) = self.refs.get(pointer) {
            return Ok(id);
        }
        // A placeholder first, so a recursive schema refers back to it.
        let id = self.push(Node::Literals(Vec::new()));
        self.refs.insert(pointer.to_string(), id);
        let compiled = self.node(target, &format!("#{pointer}"))?;
        self.nodes[id] = self.nodes[compiled].clone();
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::JsonMachine;
    use serde_json::json;

    fn accepts(schema: &Value, text: &str) -> bool {
        let g = compile(schema).unwrap();
        let mut m = JsonMachine::new(&g);
        m.feed(&g, text.as_bytes()) && m.is_complete()
    }

    #[test]
    fn objects_follow_properties_and_required() {
        let s = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "pet": {"type": ["object", "null"], "properties": {"kind": {"enum": ["cat", "dog"]}}, "required": ["kind"]},
                "ok": {"type": "boolean"},
                "score": {"type": "number"},
                "v": {"const": 2}
            },
            "required": ["name", "age"],
            "additionalProperties": false
        });
        // Required first (sorted), then optional ones (sorted), any may be left out.
        for ok in [
            r#"{"age": 3, "name": "Tom"}"#,
            r#"{"age":-3,"name":"T\"om","ok":true,"pet":{"kind":"cat"},"score":1.5e3,"tags":["a","b"],"v":2}"#,
            r#"{"age": 0, "name": "", "pet": null}"#,
            r#"{ "age" : 1 , "name" : "x" , "tags" : [ ] }"#,
        ] {
            assert!(accepts(&s, ok), "{ok}");
        }
        for bad in [
            r#"{"name": "Tom", "age": 3}"#,
            r#"{"age": 3}"#,
            r#"{"age": 3.5, "name": "Tom"}"#,
            r#"{"age": 3, "name": 4}"#,
            r#"{"age": 3, "name": "x", "extra": 1}"#,
            r#"{"age": 3, "name": "x", "tags": ["a", "b", "c"]}"#,
            r#"{"age": 3, "name": "x", "pet": {"kind": "cow"}}"#,
            r#"{"age": 3, "name": "x", "pet": {}}"#,
            r#"{"age": 3, "name": "x", "v": 3}"#,
            r#"{"age": 3, "name": "x", "ok": 1}"#,
            r#"{"age": 3, "name": "x",}"#,
            r#"{"age": 3, "name": "x"} "#,
        ] {
            assert!(!accepts(&s, bad), "{bad}");
        }
    }

    #[test]
    fn enums_numbers_refs_and_maps() {
        let s = json!({
            "type": "object",
            "properties": {"n": {"enum": [1, 12, "x", null, {"a": [true]}]}},
            "required": ["n"]
        });
        for ok in ["1", "12", "\"x\"", "null", r#"{"a":[true]}"#] {
            assert!(accepts(&s, &format!(r#"{{"n": {ok}}}"#)), "{ok}");
        }
        for bad in ["123", "2", "\"y\"", r#"{"a": [true]}"#] {
            assert!(!accepts(&s, &format!(r#"{{"n": {bad}}}"#)), "{bad}");
        }
        let tree = json!({
            "$ref": "#/$defs/node",
            "$defs": {"node": {
                "type": "object",
                "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["v"],
                "additionalProperties": false
            }}
        });
        assert!(accepts(
            &tree,
            r#"{"v":1,"kids":[{"v":2},{"v":3,"kids":[]}]}"#
        ));
        assert!(!accepts(&tree, r#"{"v":1,"kids":[{"w":2}]}"#));
        let map = json!({"type": "object", "additionalProperties": {"type": "number"}});
        assert!(accepts(&map, r#"{"a": 1, "b": 2.5}"#));
        assert!(!accepts(&map, r#"{"a": "1"}"#));
        let any = json!({"type": "object"});
        assert!(accepts(&any, r#"{"a": [1, {"b": null}]}"#));
        let optional_first =
            json!({"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "null"}}});
        for ok in [
            "{}",
            r#"{"a":null}"#,
            r#"{"b":null}"#,
            r#"{"a":null,"b":null}"#,
        ] {
            assert!(accepts(&optional_first, ok), "{ok}");
        }
        assert!(!accepts(&optional_first, r#"{"b":null,"a":null}"#));
    }

    #[test]
    fn unsupported_schemas_are_refused_with_the_place() {
        for (schema, want) in [
            (
                json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}),
                "#/properties/a: the keyword 'pattern'",
            ),
            (json!({"type": "string"}), "root must be an object"),
            (
                json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "number"}]}}}),
                "can both start with '-'",
            ),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/none"}}}),
                "#/properties/a/$ref",
            ),
            (
                json!({"type": "object", "required": ["a"]}),
                "#/required: \"a\" is not one of the properties",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "date"}}}),
                "unknown type 'date'",
            ),
            (
                json!({"type": "object", "properties": {"a": {}}, "additionalProperties": true}),
                "only false",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "items": [{}]}}}),
                "tuples",
            ),
            (json!(false), "must be an object or true"),
        ] {
            let err = compile(&schema).unwrap_err();
            assert!(err.contains(want), "{schema}: {err}");
        }
    }
}
