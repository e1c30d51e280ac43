// Package engine is the contract between the scheduler and the programs that
// serve models: the typed model Kind, the Engine and Launcher interfaces, the
// optional capabilities an engine may have (named interfaces, asserted like
// io.WriterTo), and the Registry that maps an engine's name to its Launcher.
//
// The scheduler imports this package only. Each engine lives in its own
// package (engine/llamacpp, engine/sdcpp, engine/command) that knows its argv,
// readiness, parameters, result shapes and wire client, and runs its
// processes through the runner package. The wiring registers each one by
// name:
//
//	reg := engine.NewRegistry()
//	reg.Register(llamacpp.Name, llamaLauncher)
//	reg.Register(command.Name, commandLauncher)
//	sched, _ := scheduler.New(cfg, store, reg, meter, log)
//
// This package imports nothing of the project's.
package engine
