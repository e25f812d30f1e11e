//! The XML element tree a stanza is parsed into and built with.
//!
//! Guarantees: names and namespaces are *resolved* — an element carries its
//! namespace URI, never a prefix, so `<stream:features>` and
//! `<features xmlns="http://etherx.jabber.org/streams">` are the same value.
//! Children keep document order; adjacent text is always merged into one node and
//! empty text is never stored, so two equal documents give equal values.
//!
//! Attribute names are plain (`to`, `type`), `xml:lang`-style for the fixed `xml`
//! prefix, or Clark notation `{uri}local` for any other namespaced attribute.
//! Namespace declarations (`xmlns`, `xmlns:p`) are not attributes: the writer
//! derives them.
//!
//! Not guaranteed: the builder does not validate names (the parser does); a name
//! that is not an XML name makes the writer's output unparsable.

/// A child of an element: an element or a run of character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (entities already resolved, never empty).
    Text(String),
}

/// An XML element with its resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    nodes: Vec<Node>,
}

impl Element {
    /// A new element `name` in namespace `ns` (`""` for no namespace).
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace URI (`""` when the element is in no namespace).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Whether this is element `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Value of attribute `name` (see the module docs for how names are spelled).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All attributes in document order.
    pub fn attrs(&self) -> &[(String, String)] {
        &self.attrs
    }

    /// Sets (or replaces) an attribute.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(key, _)| *key == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Removes an attribute, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let index = self.attrs.iter().position(|(key, _)| key == name)?;
        Some(self.attrs.remove(index).1)
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder form of [`Element::push_child`].
    pub fn with_child(mut self, child: Element) -> Self {
        self.push_child(child);
        self
    }

    /// Builder form of [`Element::push_text`].
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.nodes.push(Node::Element(child));
    }

    /// Appends character data, merged into a preceding text node; empty text is
    /// ignored so the tree stays canonical.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.nodes.last_mut() {
            Some(Node::Text(last)) => last.push_str(&text),
            _ => self.nodes.push(Node::Text(text)),
        }
    }

    /// All child nodes (elements and text) in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The child elements in order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.nodes.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            Node::Text(_) => None,
        })
    }

    /// The first child element `name` in namespace `ns`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|child| child.is(name, ns))
    }

    /// Mutable access to the first child element `name` in namespace `ns`.
    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.nodes.iter_mut().find_map(|node| match node {
            Node::Element(element) if element.is(name, ns) => Some(element),
            _ => None,
        })
    }

    /// The concatenated direct text of this element (not of its descendants).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            if let Node::Text(text) = node {
                out.push_str(text);
            }
        }
        out
    }

    /// Serialises as a standalone document fragment: the root declares its
    /// namespace (the form RFC 7395 WebSocket frames require).
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        super::writer::write_element(self, &mut out, &super::writer::Scope::standalone());
        out
    }
}
