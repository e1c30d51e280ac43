package main

import "flag"

// flags adds serve's -watch-config; the -config path is read from fs once
// the flags are parsed (path).
func (o *reloadOpts) flags(fs *flag.FlagSet) {
	fs.BoolVar(&o.watch, "watch-config", false,
		"reload the config file when it changes (checked every 500 ms); SIGHUP and POST /admin/reload always reload it")
	o.fs = fs
}

// configPath is the -config value serve started with.
func (o *reloadOpts) configPath() string {
	if o.fs == nil {
		return o.path
	}
	if f := o.fs.Lookup("config"); f != nil {
		return f.Value.String()
	}
	return ""
}
