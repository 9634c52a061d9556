// Package secretfile reads a password from a file: the one rule every
// password_file in the agent follows (the Redis client, the Redis admin
// connection and transition, the PKCS#12 keystores).
//
// The password is the file's content without its trailing line breaks,
// any number of "\n" or "\r\n": what `redis-cli -a "$(cat FILE)"`,
// `REDISCLI_AUTH="$(cat FILE)"` or `uvicorn --ssl-keyfile-password
// "$(cat FILE)"` pass, so a file written by `echo`, an editor or a
// Windows editor is the password its consumer expects. Every other byte,
// leading and trailing spaces included, is part of the password. The
// file is read on every use, so a rotated password needs no restart.
package secretfile
