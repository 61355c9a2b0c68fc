//! A mergekit YAML config (`mergekit-yaml`'s recipe): the method, the models or slices with their
//! layer ranges, and each parameter's setting per model, slice or globally, looked up per tensor.

use std::collections::BTreeSet;

use safetensors::Dtype;
use serde_json::Value;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Linear,
    TaskArithmetic,
    Ties,
    DareTies,
    DareLinear,
    Slerp,
}

impl Method {
    fn parse(s: &str) -> Result<Method> {
        Ok(match s {
            "linear" => Method::Linear,
            "task_arithmetic" => Method::TaskArithmetic,
            "ties" => Method::Ties,
            "dare_ties" => Method::DareTies,
            "dare_linear" => Method::DareLinear,
            "slerp" => Method::Slerp,
            other => {
                return Err(Error::input(format!(
                    "merge_method '{other}' is not one tinytune runs: use linear, task_arithmetic, ties, dare_ties, dare_linear or slerp"
                )));
            }
        })
    }
    pub(super) fn uses_base(self) -> bool {
        !matches!(self, Method::Linear)
    }
    pub(super) fn default_normalize(self) -> bool {
        matches!(self, Method::Linear | Method::Ties)
    }
    pub(super) fn default_rescale(self) -> bool {
        matches!(self, Method::DareTies | Method::DareLinear)
    }
}

/// One source of a slice: a model and the layers taken from it.
#[derive(Clone, Debug)]
pub(super) struct Source {
    pub(super) model: String,
    pub(super) layers: Option<(usize, usize)>,
    pub(super) parameters: Value,
}

#[derive(Clone, Debug)]
pub(super) struct Slice {
    pub(super) sources: Vec<Source>,
    pub(super) base_model: Option<String>,
    pub(super) parameters: Value,
}

/// A parsed mergekit config.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    pub method: Method,
    pub base_model: Option<String>,
    pub(super) slices: Vec<Slice>,
    /// Whether the config used `slices:` (layers renumbered) rather than `models:`.
    pub(super) sliced: bool,
    pub(super) parameters: Value,
    pub dtype: Option<Dtype>,
    pub out_dtype: Option<Dtype>,
}

fn dtype(v: &Value, key: &str) -> Result<Option<Dtype>> {
    let Some(s) = v.get(key).and_then(|d| d.as_str()) else { return Ok(None) };
    Ok(Some(match s.trim_start_matches("torch.") {
        "float32" => Dtype::F32,
        "float16" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        other => return Err(Error::input(format!("{key}: '{other}' is not a dtype tinytune writes (float32, float16, bfloat16)"))),
    }))
}

/// YAML → JSON values (mergekit configs are plain maps, lists and scalars).
fn yaml_to_json(y: &yaml_rust2::Yaml) -> Result<Value> {
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Real(s) => Value::from(s.parse::<f64>().map_err(|_| Error::input(format!("'{s}' is not a number")))?),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.clone()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect::<Result<_>>()?),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => return Err(Error::input(format!("a YAML key {other:?} is not a string"))),
                };
                m.insert(key, yaml_to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Null | Yaml::BadValue => Value::Null,
        Yaml::Alias(_) => return Err(Error::input("YAML aliases are not supported in merge configs")),
    })
}

impl MergeConfig {
    pub fn from_yaml(text: &str) -> Result<MergeConfig> {
        let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| Error::input(format!("merge config: {e}")))?;
        let doc = docs.first().ok_or_else(|| Error::input("the merge config is empty"))?;
        let v = yaml_to_json(doc)?;
        let method = Method::parse(v.get("merge_method").and_then(|m| m.as_str()).ok_or_else(|| Error::input("the merge config has no merge_method"))?)?;
        let base_model = v.get("base_model").and_then(|b| b.as_str()).map(String::from);
        let parameters = v.get("parameters").cloned().unwrap_or(Value::Null);
        let params = |x: &Value| x.get("parameters").cloned().unwrap_or(Value::Null);
        let (slices, sliced) = match (v.get("models"), v.get("slices")) {
            (Some(models), None) => {
                let mut sources: Vec<Source> = models
                    .as_array()
                    .ok_or_else(|| Error::input("models: expected a list"))?
                    .iter()
                    .map(|m| {
                        let model = m.get("model").and_then(|x| x.as_str()).ok_or_else(|| Error::input("models: every entry needs `model`"))?;
                        Ok(Source { model: model.to_string(), layers: None, parameters: params(m) })
                    })
                    .collect::<Result<_>>()?;
                // mergekit appends the base as a source when the list lacks it.
                if let Some(b) = &base_model {
                    if !sources.iter().any(|s| &s.model == b) {
                        sources.push(Source { model: b.clone(), layers: None, parameters: Value::Null });
                    }
                }
                (vec![Slice { sources, base_model: base_model.clone(), parameters: Value::Null }], false)
            }
            (None, Some(slices)) => {
                let list = slices.as_array().ok_or_else(|| Error::input("slices: expected a list"))?;
                let mut out = Vec::new();
                for s in list {
                    let sources = s
                        .get("sources")
                        .and_then(|x| x.as_array())
                        .ok_or_else(|| Error::input("slices: every slice needs `sources`"))?
                        .iter()
                        .map(|src| {
                            let model = src.get("model").and_then(|x| x.as_str()).ok_or_else(|| Error::input("slices: every source needs `model`"))?;
                            let range = src.get("layer_range").and_then(|r| r.as_array()).ok_or_else(|| Error::input("slices: every source needs `layer_range`"))?;
                            let (a, b) = match range.as_slice() {
                                [a, b] => (a.as_u64().unwrap_or(0) as usize, b.as_u64().unwrap_or(0) as usize),
                                _ => return Err(Error::input("layer_range must be [start, end]")),
                            };
                            Ok(Source { model: model.to_string(), layers: Some((a, b)), parameters: params(src) })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let lens: BTreeSet<usize> = sources.iter().map(|s| s.layers.map_or(0, |(a, b)| b.saturating_sub(a))).collect();
                    if lens.len() != 1 {
                        return Err(Error::input("every source of a slice must give the same number of layers"));
                    }
                    let base = s.get("base_model").and_then(|b| b.as_str()).map(String::from).or_else(|| base_model.clone());
                    out.push(Slice { sources, base_model: base, parameters: params(s) });
                }
                (out, true)
            }
            _ => return Err(Error::input("the merge config needs exactly one of `models` and `slices`")),
        };
        if method.uses_base() && slices.iter().any(|s| s.base_model.is_none()) {
            return Err(Error::input(format!("{method:?} needs base_model")));
        }
        Ok(MergeConfig { method, base_model, slices, sliced, parameters, dtype: dtype(&v, "dtype")?, out_dtype: dtype(&v, "out_dtype")? })
    }

    /// Every model path the config names.
    pub fn models(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.slices.iter().flat_map(|s| s.sources.iter().map(|x| x.model.clone())).collect();
        out.extend(self.base_model.clone());
        out.extend(self.slices.iter().filter_map(|s| s.base_model.clone()));
        out
    }
}

/// A parameter's value for `tensor` at position `t` in its slice: a scalar, a gradient, or the
/// first matching `{filter, value}` (mergekit's `ParameterSetting`). `None` when nothing matches.
fn setting(v: &Value, tensor: &str, t: f64) -> Option<Value> {
    let value_of = |x: &Value| -> Option<Value> {
        match x {
            Value::Array(list) if list.iter().all(|e| e.is_number()) => {
                if list.is_empty() {
                    return None;
                }
                let n = list.len();
                let s = t * (n - 1) as f64;
                let i0 = s as usize;
                let i1 = (i0 + 1).min(n - 1);
                let f = s - i0 as f64;
                let (a, b) = (list[i0].as_f64()?, list[i1].as_f64()?);
                Some(Value::from((1.0 - f) * a + f * b))
            }
            Value::Array(list) => list.get((t * (list.len().max(1) - 1) as f64) as usize).cloned(),
            other => Some(other.clone()),
        }
    };
    match v {
        Value::Null => None,
        Value::Array(list) if list.iter().any(|e| e.is_object()) => {
            for cond in list {
                let filter = cond.get("filter").and_then(|f| f.as_str());
                if filter.is_none_or(|f| f == "*" || tensor.contains(f)) {
                    return cond.get("value").and_then(value_of);
                }
            }
            None
        }
        Value::Object(o) if o.contains_key("value") => {
            let filter = o.get("filter").and_then(|f| f.as_str());
            if filter.is_none_or(|f| f == "*" || tensor.contains(f)) { o.get("value").and_then(value_of) } else { None }
        }
        other => value_of(other),
    }
}

/// Look a parameter up: the source's settings (unless shared), the slice's, the global ones.
pub(super) fn lookup(name: &str, tensor: &str, t: f64, source: Option<&Source>, slice: &Slice, global: &Value) -> Option<Value> {
    let get = |scope: &Value| scope.get(name).and_then(|v| setting(v, tensor, t));
    source.and_then(|s| get(&s.parameters)).or_else(|| get(&slice.parameters)).or_else(|| get(global))
}

pub(super) fn as_f64(v: Option<Value>, what: &str) -> Result<Option<f64>> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::Bool(b)) => Ok(Some(b as u8 as f64)),
        Some(other) => Err(Error::input(format!("{what}: {other} is not a number"))),
    }
}

pub(super) fn as_bool(v: Option<Value>, what: &str) -> Result<Option<bool>> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::Number(n)) => Ok(Some(n.as_f64() != Some(0.0))),
        Some(other) => Err(Error::input(format!("{what}: {other} is not true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gradient_interpolates_across_a_slice_and_filters_take_the_first_match() {
        // [0.2, 0.8] over t = 0.5: 0.5.
        assert_eq!(setting(&serde_json::json!([0.2, 0.8]), "x", 0.5), Some(Value::from(0.5)));
        // Three points, t = 0.75: s = 1.5 → halfway between 0.5 and 1.0.
        assert_eq!(setting(&serde_json::json!([0.0, 0.5, 1.0]), "x", 0.75), Some(Value::from(0.75)));
        let filtered = serde_json::json!([{"filter": "self_attn", "value": 0.1}, {"value": 0.9}]);
        assert_eq!(setting(&filtered, "model.layers.0.self_attn.q_proj.weight", 0.0), Some(Value::from(0.1)));
        assert_eq!(setting(&filtered, "model.layers.0.mlp.up_proj.weight", 0.0), Some(Value::from(0.9)));
    }
}
