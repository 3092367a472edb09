//! The YAML front end: files and directories of multi-document YAML become
//! JSON values, each with an index from field path to source position, so
//! that any error about a field (from decoding, validation or the server) is
//! reported as `file:line:column: path: message`.

use saphyr::{MarkedYaml, Scalar, ScanError, YamlData, YamlLoader};
use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The largest manifest file read, so a mistaken `-f /dev/zero` fails fast.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// A position in a source file: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// An error tied to a place in a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub position: Option<Position>,
    /// Field path inside the document; empty for syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The text of one file, kept so that positions can be found when an error
/// needs one: the common, error-free path never builds the position index.
#[derive(Debug)]
struct Source {
    file: String,
    text: String,
    /// Per YAML node of the file: field path to position. Built on first use.
    positions: OnceLock<Vec<HashMap<String, Position>>>,
}

impl Source {
    fn positions(&self) -> &[HashMap<String, Position>] {
        self.positions.get_or_init(|| {
            let mut out = Vec::new();
            let mut receiver = PerDocument {
                loader: YamlLoader::default(),
                done: |node: MarkedYaml<'_>| {
                    let mut map = HashMap::new();
                    map.insert(String::new(), position(&node));
                    index(&node, "", &mut map);
                    out.push(map);
                },
                error: None,
            };
            // The text parsed once already; a failure here cannot happen.
            let _ = Parser::new_from_str(&self.text).load(&mut receiver, true);
            out
        })
    }
}

/// Records the position of every field path below `node`: the key's for
/// mapping entries, the item's for sequence elements.
fn index(node: &MarkedYaml<'_>, path: &str, map: &mut HashMap<String, Position>) {
    match &node.data {
        YamlData::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                map.insert(p.clone(), position(item));
                index(item, &p, map);
            }
        }
        YamlData::Mapping(entries) => {
            for (k, v) in entries {
                let YamlData::Value(key) = &k.data else {
                    continue;
                };
                let key = scalar_text(key);
                let p = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                map.insert(p.clone(), position(k));
                index(v, &p, map);
            }
        }
        YamlData::Tagged(_, inner) => index(inner, path, map),
        _ => {}
    }
}

/// One document of a manifest: its value (JSON, or what the caller turned
/// it into as it was read) and where it came from.
#[derive(Debug)]
pub struct Document<T = Value> {
    pub value: T,
    source: Arc<Source>,
    /// Index of the document's node among the file's YAML documents.
    node: usize,
}

impl<T> Document<T> {
    pub fn file(&self) -> &str {
        &self.source.file
    }

    /// Where `path` is written, or failing that its closest written parent
    /// (a missing field is reported where its parent mapping is), or the
    /// document itself.
    pub fn locate(&self, path: &str) -> Option<Position> {
        let positions = self.source.positions().get(self.node)?;
        let mut p = path;
        loop {
            if let Some(pos) = positions.get(p) {
                return Some(*pos);
            }
            match p.rfind(['.', '[']) {
                Some(cut) => p = &p[..cut],
                None => return positions.get("").copied(),
            }
        }
    }

    pub fn error(&self, path: &str, message: impl Into<String>) -> Located {
        Located {
            file: self.source.file.clone(),
            position: self.locate(path),
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Reads `inputs` (files, directories of `*.yaml`/`*.yml`, or `-` for
/// standard input) in order. All errors of all files are returned.
pub fn load(inputs: &[PathBuf]) -> Result<Vec<Document>, Vec<Located>> {
    load_as(inputs, |value| value)
}

/// [`load`], each document's value handed to `into` as soon as it is read
/// (its PEM files inlined) and only what that returns kept: a manifest of
/// tens of thousands of documents need not be held as JSON trees.
pub fn load_as<T>(
    inputs: &[PathBuf],
    mut into: impl FnMut(Value) -> T,
) -> Result<Vec<Document<T>>, Vec<Located>> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        for file in expand(input, &mut errors) {
            match read(&file) {
                Ok(text) => {
                    let base = file.parent().unwrap_or(Path::new("."));
                    let inline = |doc: &mut Document, errors: &mut Vec<Located>| {
                        inline_pem_files(doc, base, errors)
                    };
                    match parse_into(file.display().to_string(), text, inline, &mut into) {
                        Ok(mut d) => docs.append(&mut d),
                        Err(mut e) => errors.append(&mut e),
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// The largest certificate or key file read.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Replaces each `*File` field that names a PEM file with the file's text:
/// HTTPS listeners' `certificateFile` and `keyFile` (`certificate`,
/// `privateKey`) and a target group's `tls.caFile` (`ca`), paths relative
/// to the YAML file. The control plane stores the text; nodes never read
/// files of the operator's machine.
fn inline_pem_files(doc: &mut Document, base: &Path, errors: &mut Vec<Located>) {
    const CERTIFICATE: &[(&str, &str)] = &[
        ("certificateFile", "certificate"),
        ("keyFile", "privateKey"),
    ];
    const CA: &[(&str, &str)] = &[("caFile", "ca")];
    let mut found = Vec::new();
    let mut inline = |object: Option<&mut Value>, path: String, fields: &[(&str, &str)]| {
        let Some(object) = object.and_then(Value::as_object_mut) else {
            return;
        };
        for (file_field, field) in fields {
            if let Some(Value::String(name)) = object.remove(*file_field) {
                match read_pem(&base.join(&name)) {
                    Ok(text) => {
                        object.insert(field.to_string(), Value::String(text));
                    }
                    Err(e) => found.push((format!("{path}.{file_field}"), format!("{name}: {e}"))),
                }
            }
        }
    };
    match doc.value.get("kind").and_then(Value::as_str) {
        Some("Service") => {
            let listeners = doc
                .value
                .pointer_mut("/spec/listeners")
                .and_then(Value::as_array_mut);
            for (i, l) in listeners.into_iter().flatten().enumerate() {
                let certs = l
                    .pointer_mut("/tls/certificates")
                    .and_then(Value::as_array_mut);
                for (j, cert) in certs.into_iter().flatten().enumerate() {
                    let path = format!("spec.listeners[{i}].tls.certificates[{j}]");
                    inline(Some(cert), path, CERTIFICATE);
                }
            }
        }
        Some("TargetGroup") => {
            inline(doc.value.pointer_mut("/spec/tls"), "spec.tls".into(), CA);
        }
        _ => {}
    }
    errors.extend(found.into_iter().map(|(path, m)| doc.error(&path, m)));
}

fn read_pem(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(text)
}

fn expand(input: &Path, errors: &mut Vec<Located>) -> Vec<PathBuf> {
    let io_error = |e: std::io::Error| Located {
        file: input.display().to_string(),
        position: None,
        path: String::new(),
        message: e.to_string(),
    };
    if input.as_os_str() == "-" || !input.is_dir() {
        return vec![input.to_path_buf()];
    }
    let entries = match std::fs::read_dir(input) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(io_error(e));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        errors.push(Located {
            file: input.display().to_string(),
            position: None,
            path: String::new(),
            message: "directory holds no *.yaml or *.yml files".into(),
        });
    }
    files
}

fn read(file: &Path) -> Result<String, Located> {
    use std::io::Read;
    let fail = |message: String| Located {
        file: file.display().to_string(),
        position: None,
        path: String::new(),
        message,
    };
    let mut text = String::new();
    let reader: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| fail(e.to_string()))?)
    };
    reader
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(text)
}

/// Feeds a YAML loader one document at a time and hands each finished
/// document on: the marked tree of a document (tens of times the size of its
/// text) is dropped as soon as it is converted, so a 7 MB file of 30,000
/// documents never holds 30,000 trees. Anchors are per document in YAML, so
/// a fresh loader per document loses nothing.
struct PerDocument<'input, F> {
    loader: YamlLoader<'input, MarkedYaml<'input>>,
    done: F,
    error: Option<ScanError>,
}

impl<'input, F: FnMut(MarkedYaml<'input>)> SpannedEventReceiver<'input> for PerDocument<'input, F> {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        if self.error.is_some() {
            return;
        }
        let end = matches!(ev, Event::DocumentEnd);
        self.loader.on_event(ev, span);
        if end {
            let loader = std::mem::take(&mut self.loader);
            match loader.error() {
                Some(e) => self.error = Some(e.clone()),
                None => loader.into_documents().into_iter().for_each(&mut self.done),
            }
        }
    }
}

/// Parses one file's text into its documents; empty documents are skipped.
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>, Vec<Located>> {
    parse_into(file.to_string(), text.to_string(), |_, _| {}, |value| value)
}

/// [`parse`], with each document `prepare`d (its errors added to the
/// file's) and then its value turned by `into`.
fn parse_into<T>(
    file: String,
    text: String,
    mut prepare: impl FnMut(&mut Document, &mut Vec<Located>),
    mut into: impl FnMut(Value) -> T,
) -> Result<Vec<Document<T>>, Vec<Located>> {
    let source = Arc::new(Source {
        file,
        text,
        positions: OnceLock::new(),
    });
    let file = source.file.as_str();
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    let mut index = 0;
    let mut receiver = PerDocument {
        loader: YamlLoader::default(),
        done: |node: MarkedYaml<'_>| {
            let i = index;
            index += 1;
            if matches!(node.data, YamlData::Value(Scalar::Null)) {
                return;
            }
            let mut conv = Converter {
                file,
                errors: &mut errors,
            };
            let value = conv.convert(&node, "");
            let mut doc = Document {
                value,
                source: source.clone(),
                node: i,
            };
            prepare(&mut doc, &mut errors);
            docs.push(Document {
                value: into(doc.value),
                source: doc.source,
                node: doc.node,
            });
        },
        error: None,
    };
    let parsed = Parser::new_from_str(&source.text).load(&mut receiver, true);
    if let Some(e) = parsed.err().or(receiver.error) {
        return Err(vec![Located {
            file: file.to_string(),
            position: Some(Position {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            }),
            path: String::new(),
            message: e.info().to_string(),
        }]);
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

fn position(node: &MarkedYaml<'_>) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

struct Converter<'a> {
    file: &'a str,
    errors: &'a mut Vec<Located>,
}

impl Converter<'_> {
    fn fail(&mut self, node: &MarkedYaml<'_>, path: &str, message: &str) -> Value {
        self.errors.push(Located {
            file: self.file.to_string(),
            position: Some(position(node)),
            path: path.to_string(),
            message: message.to_string(),
        });
        Value::Null
    }

    fn convert(&mut self, node: &MarkedYaml<'_>, path: &str) -> Value {
        match &node.data {
            YamlData::Value(s) => match scalar(s) {
                Some(v) => v,
                None => self.fail(node, path, "numbers must be finite"),
            },
            YamlData::Representation(text, _, _) => Value::String(text.to_string()),
            // Tags are not part of the resource grammar; `!!str 80` stays a string.
            YamlData::Tagged(tag, inner) => match (&inner.data, tag.suffix.as_str()) {
                (YamlData::Value(s), "str") => Value::String(scalar_text(s)),
                _ => self.convert(inner, path),
            },
            YamlData::Sequence(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.convert(item, &format!("{path}[{i}]")))
                    .collect(),
            ),
            YamlData::Mapping(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let key = match &k.data {
                        YamlData::Value(s) => scalar_text(s),
                        _ => {
                            self.fail(k, path, "mapping keys must be scalars");
                            continue;
                        }
                    };
                    let p = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let value = self.convert(v, &p);
                    out.insert(key, value);
                }
                Value::Object(out)
            }
            YamlData::Alias(_) | YamlData::BadValue => self.fail(node, path, "unresolvable alias"),
        }
    }
}

fn scalar(s: &Scalar<'_>) -> Option<Value> {
    Some(match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Value::Number(Number::from_f64(f.into_inner())?),
        Scalar::String(s) => Value::String(s.to_string()),
    })
}

fn scalar_text(s: &Scalar<'_>) -> String {
    match s {
        Scalar::Null => "null".into(),
        Scalar::Boolean(b) => b.to_string(),
        Scalar::Integer(i) => i.to_string(),
        Scalar::FloatingPoint(f) => f.into_inner().to_string(),
        Scalar::String(s) => s.to_string(),
    }
}

/// Renders a JSON value as a YAML document (for `get -o yaml` and `diff`).
pub fn to_yaml(value: &Value) -> String {
    let yaml = to_saphyr(value);
    let mut out = String::new();
    let mut emitter = saphyr::YamlEmitter::new(&mut out);
    // Writing into a String cannot fail.
    let _ = emitter.dump(&yaml);
    // The emitter starts every document with `---`; callers join documents.
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    format!("{body}\n")
}

fn to_saphyr(value: &Value) -> saphyr::Yaml<'static> {
    use saphyr::Yaml;
    match value {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Value(Scalar::Integer(i)),
            None => Yaml::Value(Scalar::FloatingPoint(n.as_f64().unwrap_or(0.0).into())),
        },
        Value::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        Value::Array(items) => Yaml::Sequence(items.iter().map(to_saphyr).collect()),
        Value::Object(map) => Yaml::Mapping(
            map.iter()
                .map(|(k, v)| (Yaml::Value(Scalar::String(k.clone().into())), to_saphyr(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TWO_DOCS: &str = "\
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata:
  name: east
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: checkout
spec:
  listeners:
    - name: web
      protocol: HTTP
      port: \"80\"
";

    #[test]
    fn documents_and_positions() {
        let docs = parse("a.yaml", TWO_DOCS).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["metadata"]["name"], "east");
        let d = &docs[1];
        assert_eq!(d.value["spec"]["listeners"][0]["port"], json!("80"));
        assert_eq!(
            d.locate("metadata.name"),
            Some(Position {
                line: 10,
                column: 3
            })
        );
        assert_eq!(
            d.locate("spec.listeners[0]"),
            Some(Position {
                line: 13,
                column: 7
            })
        );
        assert_eq!(
            d.locate("spec.listeners[0].protocol"),
            Some(Position {
                line: 14,
                column: 7
            })
        );
        // A missing field is placed at its closest parent.
        assert_eq!(
            d.locate("spec.listeners[0].defaultAction"),
            Some(Position {
                line: 13,
                column: 7
            })
        );
        assert_eq!(
            d.error("spec.listeners[0].port", "bad").to_string(),
            "a.yaml:15:7: spec.listeners[0].port: bad"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let errs = parse("bad.yaml", "a: [1, 2\nb: c\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].position.is_some());
        assert!(errs[0].to_string().starts_with("bad.yaml:"), "{}", errs[0]);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let errs = parse("dup.yaml", "a: 1\na: 2\n").unwrap_err();
        assert!(errs[0].message.contains("duplicate"), "{}", errs[0].message);
    }

    #[test]
    fn yaml_round_trip_keeps_strings_strings() {
        let v = json!({"code": "200", "n": 3, "ok": true, "list": ["a: b", "-x"], "none": null});
        let text = to_yaml(&v);
        let back = parse("x", &text).unwrap();
        assert_eq!(back[0].value, v, "{text}");
    }
}
