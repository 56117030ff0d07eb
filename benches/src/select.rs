//! `--scenario a,b,…` and `--contender a,b,…`: which of the known names a run is limited to.
//! A name the run does not know is an error that lists the known ones, never silently skipped.

use anyhow::{bail, ensure};

/// A comma-separated choice among known names; everything when the option is absent.
#[derive(Debug, Default)]
pub struct Selection(Option<Vec<String>>);

impl Selection {
    /// `option` names the command-line option, for the error message.
    pub fn parse(option: &str, arg: Option<&str>, known: &[&str]) -> anyhow::Result<Selection> {
        let Some(arg) = arg else { return Ok(Selection(None)) };
        let names: Vec<String> = arg.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        ensure!(!names.is_empty(), "{option}: no name given (known: {})", known.join(", "));
        if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
            bail!("{option}: no {} named {bad:?} here (known: {})", option.trim_start_matches('-'), known.join(", "));
        }
        Ok(Selection(Some(names)))
    }

    /// Nothing was chosen: the run's own default set applies.
    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `name` runs: chosen, or nothing was chosen.
    pub fn wants(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_choose_and_unknown_names_are_errors() {
        let known = ["a", "b", "c"];
        let all = Selection::parse("--scenario", None, &known).unwrap();
        assert!(all.is_all() && all.wants("a"));
        let some = Selection::parse("--scenario", Some("a, c"), &known).unwrap();
        assert!(!some.is_all() && some.wants("a") && some.wants("c") && !some.wants("b"));
        let err = Selection::parse("--scenario", Some("a,d"), &known).unwrap_err().to_string();
        assert_eq!(err, r#"--scenario: no scenario named "d" here (known: a, b, c)"#);
        assert!(Selection::parse("--contender", Some(","), &known).is_err());
    }
}
