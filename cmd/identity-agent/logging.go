package main

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/identity-agent/identity-agent/internal/config"
)

// newLogger builds the agent's zap logger writing to w (stderr: journald
// and launchd capture it).
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	log, _, err := newLeveledLogger(c, w)
	return log, err
}

// newLeveledLogger is newLogger with its level, which a config reload sets.
func newLeveledLogger(c config.Log, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, zap.AtomicLevel{}, fmt.Errorf("log.level: %w", err)
	}
	level := zap.NewAtomicLevelAt(lvl)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	// "250ms", not 0.25: a duration field carries its unit.
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(w), level)
	return zap.New(core), level, nil
}
