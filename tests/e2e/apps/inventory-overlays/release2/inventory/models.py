from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()


class Item(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(db.String(100))
    quantity: Mapped[int] = mapped_column(server_default="0")

    def as_dict(self):
        return {"id": self.id, "name": self.name, "quantity": self.quantity}
