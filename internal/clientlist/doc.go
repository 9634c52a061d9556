// Package clientlist parses Redis CLIENT LIST and CLIENT INFO replies, for
// the client (which path served it) and the server-side transition (who is
// still on the plaintext port). One parser, so both read a line alike.
package clientlist
