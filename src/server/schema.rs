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
//! order the schema lists them.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::grammar::{any_value, Grammar, GrammarError, Node, NodeId, Prop, MAX_CHOICES};

/// A JSON schema as written: objects keep their keys' order (serde_json's
/// `Value` sorts them, and the order of `properties` is the reply's).
#[derive(Clone, Debug, PartialEq)]
pub enum Schema {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Schema>),
    Object(Vec<(String, Schema)>),
}

type Map = [(String, Schema)];

impl Schema {
    fn get<'m>(m: &'m Map, key: &str) -> Option<&'m Schema> {
        m.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Schema::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as serde_json's (for its JSON text).
    fn to_value(&self) -> Value {
        match self {
            Schema::Null => Value::Null,
            Schema::Bool(b) => Value::Bool(*b),
            Schema::Number(n) => Value::Number(n.clone()),
            Schema::String(s) => Value::String(s.clone()),
            Schema::Array(v) => Value::Array(v.iter().map(Schema::to_value).collect()),
            Schema::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }

    /// The compact JSON text of the value.
    fn text(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }

    /// The value at a JSON pointer (RFC 6901), such as `/$defs/Name`.
    fn pointer(&self, pointer: &str) -> Option<&Schema> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut at = self;
        for part in pointer.strip_prefix('/')?.split('/') {
            let part = part.replace("~1", "/").replace("~0", "~");
            at = match at {
                Schema::Object(m) => Schema::get(m, &part)?,
                Schema::Array(v) => v.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Schema, D::Error> {
        d.deserialize_any(SchemaVisitor)
    }
}

struct SchemaVisitor;

impl<'de> Visitor<'de> for SchemaVisitor {
    type Value = Schema;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Schema, E> {
        Ok(Schema::Null)
    }

    fn visit_none<E>(self) -> Result<Schema, E> {
        Ok(Schema::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Schema, E> {
        Ok(Schema::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Schema, E> {
        Ok(Schema::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Schema, E> {
        Ok(Schema::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Schema, E> {
        serde_json::Number::from_f64(n)
            .map(Schema::Number)
            .ok_or_else(|| E::custom(format!("{n} is not a JSON number")))
    }

    fn visit_str<E>(self, s: &str) -> Result<Schema, E> {
        Ok(Schema::String(s.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Schema, A::Error> {
        let mut v = Vec::new();
        while let Some(item) = seq.next_element()? {
            v.push(item);
        }
        Ok(Schema::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Schema, A::Error> {
        let mut m = Vec::new();
        while let Some(entry) = map.next_entry()? {
            m.push(entry);
        }
        Ok(Schema::Object(m))
    }
}

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
pub fn compile(schema: &Schema) -> Result<Grammar, String> {
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
    root: &'a Schema,
    nodes: Vec<Node>,
    /// `$ref` targets compiled so far (recursive schemas refer back).
    refs: HashMap<String, NodeId>,
    any: Option<NodeId>,
}

fn list<'v>(m: &'v Map, key: &str, path: &str) -> Result<&'v [Schema], String> {
    match Schema::get(m, key) {
        Some(Schema::Array(v)) if !v.is_empty() => Ok(v),
        _ => Err(format!("{path}/{key}: must be a non-empty array")),
    }
}

fn count(m: &Map, key: &str, path: &str) -> Result<Option<usize>, String> {
    match Schema::get(m, key) {
        None => Ok(None),
        Some(v) => match v {
            Schema::Number(n) => n.as_u64(),
            _ => None,
        }
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

    fn node(&mut self, schema: &Schema, path: &str) -> Result<NodeId, String> {
        let m = match schema {
            Schema::Bool(true) => return Ok(self.any()),
            Schema::Object(m) => &m[..],
            _ => return Err(format!("{path}: a schema must be an object or true")),
        };
        let has = |key: &str| Schema::get(m, key).is_some();
        if let Some((k, _)) = m
            .iter()
            .find(|(k, _)| !KEYWORDS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(format!(
                "{path}: the keyword '{k}' is not supported (supported: {})",
                KEYWORDS.join(", ")
            ));
        }
        if let Some(r) = Schema::get(m, "$ref") {
            return self.reference(r, path);
        }
        if let Some(c) = Schema::get(m, "const") {
            return Ok(self.push(Node::Literals(vec![c.text()])));
        }
        if has("enum") {
            let values = list(m, "enum", path)?;
            if values.len() > MAX_CHOICES {
                return Err(format!(
                    "{path}/enum: {} values; at most {MAX_CHOICES} are supported",
                    values.len()
                ));
            }
            let texts = values.iter().map(Schema::text).collect();
            return Ok(self.push(Node::Literals(texts)));
        }
        for key in ["anyOf", "oneOf"] {
            if has(key) {
                let mut alts = Vec::new();
                for (i, alt) in list(m, key, path)?.iter().enumerate() {
                    alts.push(self.node(alt, &format!("{path}/{key}/{i}"))?);
                }
                return Ok(self.push(Node::Union(alts)));
            }
        }
        match Schema::get(m, "type") {
            None if ["properties", "required", "additionalProperties"]
                .iter()
                .any(|k| has(k)) =>
            {
                self.typed("object", m, path)
            }
            None if ["items", "minItems", "maxItems"].iter().any(|k| has(k)) => {
                self.typed("array", m, path)
            }
            None => Ok(self.any()),
            Some(Schema::String(t)) => self.typed(t, m, path),
            Some(Schema::Array(types)) if !types.is_empty() => {
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

    fn typed(&mut self, t: &str, m: &Map, path: &str) -> Result<NodeId, String> {
        let node = match t {
            "object" => return self.object(m, path),
            "array" => {
                let items = match Schema::get(m, "items") {
                    None => self.any(),
                    Some(s @ (Schema::Object(_) | Schema::Bool(true))) => {
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

    fn object(&mut self, m: &Map, path: &str) -> Result<NodeId, String> {
        let props = match Schema::get(m, "properties") {
            None => &[][..],
            Some(Schema::Object(p)) => &p[..],
            Some(_) => return Err(format!("{path}/properties: must be an object")),
        };
        let mut required = Vec::new();
        if let Some(r) = Schema::get(m, "required") {
            let Schema::Array(r) = r else {
                return Err(format!("{path}/required: must be an array of names"));
            };
            for name in r {
                match name.as_str() {
                    Some(n) if Schema::get(props, n).is_some() => required.push(n),
                    _ => {
                        return Err(format!(
                            "{path}/required: {} is not one of the properties",
                            name.to_value()
                        ))
                    }
                }
            }
        }
        match (Schema::get(m, "additionalProperties"), props.is_empty()) {
            (None | Some(Schema::Bool(true)), true) => {
                let any = self.any();
                return Ok(self.push(Node::Map(any)));
            }
            (Some(s @ Schema::Object(_)), true) => {
                let value = self.node(s, &format!("{path}/additionalProperties"))?;
                return Ok(self.push(Node::Map(value)));
            }
            (None | Some(Schema::Bool(false)), _) => {}
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

    fn reference(&mut self, r: &Schema, path: &str) -> Result<NodeId, String> {
        let target = r
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| self.root.pointer(pointer).map(|t| (pointer, t)));
        let Some((pointer, target)) = target else {
            return Err(format!(
                "{path}/$ref: {} is not a reference into this schema (such as \"#/$defs/Name\")",
                r.to_value()
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

    /// Schemas from json! have their keys sorted; from_str keeps the order.
    fn schema(v: Value) -> Schema {
        serde_json::from_value(v).unwrap()
    }

    fn accepts(schema: &Value, text: &str) -> bool {
        accepts_schema(&self::schema(schema.clone()), text)
    }

    fn accepts_schema(schema: &Schema, text: &str) -> bool {
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
    fn properties_keep_the_schema_order() {
        let s: Schema = serde_json::from_str(
            r#"{"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}, "m": {"type": "integer"}}, "required": ["m", "z"]}"#,
        )
        .unwrap();
        assert!(accepts_schema(&s, r#"{"z": 1, "m": 2, "a": 3}"#));
        assert!(accepts_schema(&s, r#"{"z": 1, "m": 2}"#));
        assert!(!accepts_schema(&s, r#"{"m": 2, "z": 1}"#));
        let s: Schema = serde_json::from_str(
            r##"{"type": "object", "properties": {"a/b": {"$ref": "#/$defs/x~1y"}}, "$defs": {"x/y": {"const": 1.5}}}"##,
        )
        .unwrap();
        assert!(accepts_schema(&s, r#"{"a/b": 1.5}"#));
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
            let err = compile(&self::schema(schema.clone())).unwrap_err();
            assert!(err.contains(want), "{schema}: {err}");
        }
    }
}
