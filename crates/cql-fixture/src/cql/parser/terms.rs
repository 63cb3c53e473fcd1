//! Types, terms (constants, markers, literals, function calls, arithmetic), integer values
//! and properties, as the statements of [`super`] read them. Only `now()`, `uuid()`, constants,
//! markers and negated numbers become values the fixture evaluates; the rest is read and
//! noted as unsupported.

use std::collections::HashSet;

use super::{Parser, Result};
use crate::cql::keywords;
use crate::cql::lexer::Token;
use crate::cql::Term;
use crate::types::{CqlType, Literal};

impl Parser<'_> {
    /// `comparatorType`: the type when the fixture stores it.
    pub(super) fn comparator_type(&mut self) -> Result<Option<CqlType>> {
        let generic = ["map", "list", "set", "tuple", "vector", "frozen"]
            .into_iter()
            .find(|k| self.at_kw(k) && self.p_at(1, "<"));
        if let Some(kind) = generic {
            self.pos += 2;
            let first = self.comparator_type()?;
            let ty = match kind {
                "map" => {
                    self.expect_p(",")?;
                    let value = self.comparator_type()?;
                    first
                        .zip(value)
                        .map(|(k, v)| CqlType::Map(Box::new(k), Box::new(v)))
                }
                "list" => first.map(|t| CqlType::List(Box::new(t))),
                "set" => first.map(|t| CqlType::Set(Box::new(t))),
                "frozen" => first,
                "tuple" => {
                    while self.eat_p(",") {
                        self.comparator_type()?;
                    }
                    None
                }
                _ => {
                    self.expect_p(",")?;
                    match self.advance()? {
                        Token::Integer(_) => None,
                        _ => return Err(self.expected("a dimension")),
                    }
                }
            };
            self.expect_p(">")?;
            return Ok(ty);
        }
        match self.peek() {
            Some(Token::Word(w)) if keywords::is_native_type(w) => {
                let ty = CqlType::parse(w);
                self.pos += 1;
                Ok(ty)
            }
            Some(Token::Str(_)) => {
                self.pos += 1;
                Ok(None)
            }
            _ => self.user_type_name().map(|()| None),
        }
    }

    pub(super) fn native_type(&mut self) -> Result<()> {
        match self.peek() {
            Some(Token::Word(w)) if keywords::is_native_type(w) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.expected("a native type")),
        }
    }

    /// `constant`, when the next token is one.
    pub(super) fn constant(&mut self) -> Option<Literal> {
        let literal = match self.peek()? {
            Token::Str(s) => Literal::Str(s.clone()),
            Token::Integer(n)
            | Token::Float(n)
            | Token::Duration(n)
            | Token::Uuid(n)
            | Token::Hex(n) => Literal::Bare(n.to_string()),
            Token::Boolean(b) => Literal::Bool(*b),
            Token::NegativeNaN => Literal::Bare("NaN".into()),
            Token::NegativeInfinity => Literal::Bare("-Infinity".into()),
            Token::Word(w) if w.eq_ignore_ascii_case("nan") => Literal::Bare("NaN".into()),
            Token::Word(w) if w.eq_ignore_ascii_case("infinity") => {
                Literal::Bare("Infinity".into())
            }
            _ => return None,
        };
        self.pos += 1;
        Some(literal)
    }

    /// `marker`: `?` or `:name`, numbered in order.
    pub(super) fn marker(&mut self) -> Result<Option<Term>> {
        match self.peek() {
            Some(Token::Marker) => self.pos += 1,
            Some(Token::Punct(":")) => {
                self.pos += 1;
                self.ident()?;
            }
            _ => return Ok(None),
        }
        self.markers += 1;
        Ok(Some(Term::Marker(self.markers - 1)))
    }

    /// `term`: additions of products of (negated) simple terms.
    pub(super) fn term(&mut self) -> Result<Term> {
        let mut term = self.term_product()?;
        while self.at_p("+") || self.at_p("-") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.term_product()
            });
            match more {
                Some(_) => {
                    self.unsupported("arithmetic");
                    term = placeholder();
                }
                None => break,
            }
        }
        Ok(term)
    }

    fn term_product(&mut self) -> Result<Term> {
        let mut term = self.term_group()?;
        while self.at_p("*") || self.at_p("/") || self.at_p("%") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.term_group()
            });
            match more {
                Some(_) => {
                    self.unsupported("arithmetic");
                    term = placeholder();
                }
                None => break,
            }
        }
        Ok(term)
    }

    fn term_group(&mut self) -> Result<Term> {
        if !self.eat_p("-") {
            return self.simple_term();
        }
        match self.simple_term()? {
            Term::Literal(Literal::Bare(n)) if n.starts_with(|c: char| c.is_ascii_digit()) => {
                Ok(Term::Literal(Literal::Bare(format!("-{n}"))))
            }
            _ => {
                self.unsupported("negation");
                Ok(placeholder())
            }
        }
    }

    /// `simpleTerm`: a value, a function call, a type cast or CAST.
    fn simple_term(&mut self) -> Result<Term> {
        if let Some(literal) = self.constant() {
            return Ok(Term::Literal(literal));
        }
        if let Some(marker) = self.marker()? {
            return Ok(marker);
        }
        if self.eat_kw("null") {
            return Ok(Term::Literal(Literal::Null));
        }
        if self.at_p("(") {
            let cast = self.attempt(|p| {
                p.pos += 1;
                p.comparator_type()?;
                p.expect_p(")")?;
                p.simple_term()
            });
            if cast.is_some() {
                self.unsupported("type hints");
                return Ok(placeholder());
            }
            self.tuple_literal()?;
            self.unsupported("tuple literals");
            return Ok(placeholder());
        }
        if self.at_p("[") || self.at_p("{") {
            self.collection_literal()?;
            self.unsupported("collection literals");
            return Ok(placeholder());
        }
        if self.at_kw("cast") && self.p_at(1, "(") {
            self.pos += 2;
            self.simple_term()?;
            self.expect_kw("as")?;
            self.native_type()?;
            self.expect_p(")")?;
            self.unsupported("CAST");
            return Ok(placeholder());
        }
        let (keyspace, name) = self.function_name()?;
        self.expect_p("(")?;
        let mut arguments = 0;
        if !self.eat_p(")") {
            loop {
                self.term()?;
                arguments += 1;
                if !self.eat_p(",") {
                    break;
                }
            }
            self.expect_p(")")?;
        }
        match (keyspace, name.as_str(), arguments) {
            (None, "now", 0) => Ok(Term::Literal(Literal::Now)),
            (None, "uuid", 0) => Ok(Term::Literal(Literal::RandomUuid)),
            _ => {
                self.unsupported("function calls");
                Ok(placeholder())
            }
        }
    }

    /// `tupleLiteral`: `(term, …)`.
    pub(super) fn tuple_literal(&mut self) -> Result<()> {
        self.expect_p("(")?;
        self.term()?;
        while self.eat_p(",") {
            self.term()?;
        }
        self.expect_p(")")
    }

    /// A list, set, map or user type literal.
    fn collection_literal(&mut self) -> Result<()> {
        if self.eat_p("[") {
            if !self.eat_p("]") {
                self.term()?;
                while self.eat_p(",") {
                    self.term()?;
                }
                self.expect_p("]")?;
            }
            return Ok(());
        }
        self.expect_p("{")?;
        if self.eat_p("}") {
            return Ok(());
        }
        let collection = self.attempt(|p| {
            p.term()?;
            if p.eat_p(":") {
                p.term()?;
                while p.eat_p(",") {
                    p.term()?;
                    p.expect_p(":")?;
                    p.term()?;
                }
            } else {
                while p.eat_p(",") {
                    p.term()?;
                }
            }
            p.expect_p("}")
        });
        if collection.is_some() {
            return Ok(());
        }
        loop {
            self.ident()?;
            self.expect_p(":")?;
            self.term()?;
            if !self.eat_p(",") {
                break;
            }
        }
        self.expect_p("}")
    }

    /// `fullMapLiteral` of constants, as properties and role options take.
    pub(super) fn property_map(&mut self) -> Result<()> {
        self.expect_p("{")?;
        if self.eat_p("}") {
            return Ok(());
        }
        loop {
            self.constant_term("property name")?;
            self.expect_p(":")?;
            self.constant_term("property value")?;
            if !self.eat_p(",") {
                break;
            }
        }
        self.expect_p("}")
    }

    /// A term that must be a lone constant.
    fn constant_term(&mut self, what: &str) -> Result<()> {
        let start = self.pos;
        self.term()?;
        let constant = self.pos == start + 1
            && matches!(
                self.tokens[start].token,
                Token::Str(_)
                    | Token::Integer(_)
                    | Token::Float(_)
                    | Token::Boolean(_)
                    | Token::Duration(_)
                    | Token::Uuid(_)
                    | Token::Hex(_)
                    | Token::NegativeNaN
                    | Token::NegativeInfinity
            );
        let named = self.pos == start + 1
            && matches!(&self.tokens[start].token, Token::Word(w)
                if w.eq_ignore_ascii_case("nan") || w.eq_ignore_ascii_case("infinity"));
        if !(constant || named) {
            self.recognize(format!("Invalid {what}"));
        }
        Ok(())
    }

    /// `intValue`: an integer or a marker.
    pub(super) fn int_value(&mut self) -> Result<Term> {
        if let Some(Token::Integer(n)) = self.peek() {
            let term = Term::Literal(Literal::Bare(n.to_string()));
            self.pos += 1;
            return Ok(term);
        }
        self.marker()?.ok_or_else(|| self.expected("an integer"))
    }

    /// `properties`: `name = value AND …`, each name once.
    pub(super) fn properties(&mut self, seen: &mut HashSet<String>) -> Result<()> {
        loop {
            self.property(seen)?;
            if !self.eat_kw("and") {
                return Ok(());
            }
        }
    }

    pub(super) fn property(&mut self, seen: &mut HashSet<String>) -> Result<()> {
        let name = self.ident()?;
        self.expect_p("=")?;
        if self.at_p("{") {
            self.property_map()?;
        } else if self.constant().is_none() {
            match self.peek() {
                Some(Token::Word(w)) if keywords::is_keyword(w) && keywords::is_name(w) => {
                    self.pos += 1
                }
                _ => return Err(self.expected("a property value")),
            }
        }
        if !seen.insert(name.clone()) {
            self.recognize(format!("Multiple definition for property {name}"));
        }
        Ok(())
    }
}

/// The term a feature the fixture does not evaluate stands in for.
fn placeholder() -> Term {
    Term::Literal(Literal::Null)
}
