// Package regfile reads application service registration files as
// Synapse, with PyYAML, reads them, and holds the checks Synapse makes of
// their values.
//
// YAML 1.1 booleans (an unquoted yes, no, on or off), anchors, aliases and
// merge keys work as in PyYAML; a key twice in one mapping is an error, and
// merge keys cannot make the reader work exponentially. A file nested more
// than MaxNesting levels deep is refused before the YAML parser reads it. No error holds the
// value of a field, which may be a token. The root package turns what
// Parse reads into a Registration and checks it.
package regfile
