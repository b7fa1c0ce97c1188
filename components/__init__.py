"""flask-droplet: a Flask app on a DigitalOcean droplet, behind nginx, deployed over SSH."""
