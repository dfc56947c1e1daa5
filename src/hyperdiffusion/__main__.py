from hyperdiffusion.cli import main

raise SystemExit(main())
